"""The comparison: the merged model against the best source, per set and metric, with flags.

The **ratio** says how many times worse the merged model is than the best source, whatever the
metric's direction:

- lower is better (perplexity): ``ratio = merged / best``, best = the lowest source value;
- higher is better (probe scores): ``ratio = best / merged``, best = the highest source value.

So ``ratio <= 1`` means the merged model matches or beats every source. Flags: ``degraded``
when ``ratio > 1.10`` (more than 10% worse), ``failed`` when ``ratio > 2`` (more than twice
as bad; a probe score of 0 where a source scores above 0 is failed). When no source has the
skill (best probe score 0) or a value is missing, the ratio is undefined and nothing is flagged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Direction = Literal["lower", "higher"]
Flag = Literal["ok", "degraded", "failed", "n/a"]
DEGRADED = 1.10
FAILED = 2.0
_REL_TOL = 1e-9  # ratios equal to a threshold up to rounding (0.88 / 0.8) are not over it

# A method to try instead, for each method, when a set fails.
_ALTERNATIVE = {
    "linear": "slerp for two models, ties for more",
    "slerp": "ties or dare_ties",
    "multislerp": "ties with a base model",
    "task_arithmetic": "ties (it trims the task vectors and elects signs)",
    "ties": "dare_ties, or a higher density",
    "dare_ties": "ties (no random drop), or a higher density",
    "dare_linear": "dare_ties or ties",
    "passthrough": "a different layer split",
}


def ratio(merged: float, best: float, direction: Direction) -> float | None:
    """How many times worse ``merged`` is than ``best`` (> 1: worse); None if undefined."""
    if any(math.isnan(v) for v in (merged, best)) or best <= 0:
        return None
    if direction == "lower":
        return merged / best
    return math.inf if merged <= 0 else best / merged


def retention(ref: float, merged: float, best: float, direction: Direction) -> float | None:
    """The share of ``best``'s gain over ``ref`` that ``merged`` keeps: 1 keeps all of it, 0
    none, below 0 is worse than ``ref``. None when ``best`` gains nothing over ``ref`` or a value
    is missing (NaN). The one formula behind the demo tables and the search's score."""
    if math.isnan(merged) or math.isnan(ref) or math.isnan(best):
        return None
    gain = ref - best if direction == "lower" else best - ref
    if not gain > 0:
        return None
    return (ref - merged if direction == "lower" else merged - ref) / gain


def flag(r: float | None) -> Flag:
    if r is None:
        return "n/a"
    if r > FAILED * (1 + _REL_TOL):
        return "failed"
    if r > DEGRADED * (1 + _REL_TOL):
        return "degraded"
    return "ok"


@dataclass(frozen=True)
class Row:
    """One set and metric: every model's value, the best source and the merged model's flag."""

    set: str
    metric: str
    direction: Direction
    values: dict[str, float]  # model label -> value, sources then the merged model
    merged: str
    best_source: str | None
    ratio: float | None
    flag: Flag
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = _json_number(self.ratio)
        d["values"] = {k: _json_number(v) for k, v in self.values.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        values = {k: math.nan if v is None else float(v) for k, v in d["values"].items()}
        r = d.get("ratio")
        r = math.inf if r == "inf" else (None if r is None else float(r))
        return cls(
            d["set"],
            d["metric"],
            d["direction"],
            values,
            d["merged"],
            d.get("best_source"),
            r,
            d["flag"],
            d.get("suggestion"),
        )


def _json_number(v: float | None) -> float | str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


def suggestion(
    row_flag: Flag, set_name: str, best: str, r: float, method: str | None
) -> str | None:
    alt = _ALTERNATIVE.get(method or "", "another method")
    if row_flag == "degraded":
        return (
            f"{set_name}: the merge is {100 * (r - 1):.0f}% worse than {best}; give {best} more "
            f"weight (or the others less), or switch methods ({alt})."
        )
    if row_flag == "failed":
        worse = "infinitely" if math.isinf(r) else f"{r:.1f}x"
        return (
            f"{set_name}: the merge lost this skill ({worse} worse than {best}); retraining on "
            f"the combined data is likely better, or try another method ({alt})."
        )
    return None


def compare_row(
    set_name: str,
    metric: str,
    direction: Direction,
    sources: dict[str, float],
    merged_label: str,
    merged_value: float,
    method: str | None = None,
) -> Row:
    """The row of one set and metric: best source, ratio, flag and suggestion."""
    known = {k: v for k, v in sources.items() if not math.isnan(v)}
    best: str | None = None
    if known:
        pick = min if direction == "lower" else max
        best = pick(known, key=lambda k: known[k])  # first listed wins ties
    r = ratio(merged_value, known[best], direction) if best is not None else None
    if r is None:
        best = None  # no source to compare with (all score 0, or no value)
    f = flag(r)
    note = suggestion(f, set_name, best, r, method) if best is not None and r is not None else None
    values = {**sources, merged_label: merged_value}
    return Row(set_name, metric, direction, values, merged_label, best, r, f, note)
