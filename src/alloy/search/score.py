"""A trial's score: each skill's retention and the degradation check.

A **skill** is a perplexity set, or a probe set's headline metric (a tool-call set's ``exact``,
a contains set's ``pass``), on which some source is better than the reference model (the base
the fine-tunes started from) by more than noise: a perplexity lower by at least `MIN_GAIN`
(2%) of the reference's, a probe rate higher by at least `MIN_RATE_GAIN` (0.05). A smaller gain
would make the retention's denominator tiny and the smallest retention meaningless (the demo's
general text: a specialist at 2.28 against the base's 2.29 gave retentions of -33000%); such a
set still guards against degradation. The merge's **retention** of it is the share of the best source's
gain it keeps: ``(reference - merged) / (reference - best source)`` for a perplexity,
``(merged - reference) / (best source - reference)`` for a probe rate; 1 keeps all of the gain,
0 none (the demo's "keeps" columns). The default objective is the smallest retention over
the skills; a trial is **feasible** when no set or probe metric is degraded by the evaluation's
rule (more than 10% worse than the best source, `alloy.evaluate.compare`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alloy.errors import EvaluationError
from alloy.evaluate.compare import DEGRADED, Direction, compare_row, retention
from alloy.evaluate.run import EvalSets

Values = Mapping[tuple[str, str], float]
OBJECTIVES = ("min-retention", "pareto")
MIN_GAIN = 0.02  # a skill's perplexity: the best source at most 98% of the reference's
MIN_RATE_GAIN = 0.05  # a skill's probe rate: the best source at least 0.05 above the reference


@dataclass(frozen=True)
class Score:
    retention: dict[str, float]  # skill -> retention
    values: dict[str, float]  # "set/metric" -> the merged model's value
    degraded: list[str] = field(default_factory=list)  # "set/metric (ratio 1.23)"
    violation: float = 0.0  # sum of the ratios' excess over the 10% rule; 0 when feasible

    @property
    def feasible(self) -> bool:
        return not self.degraded

    @property
    def min_retention(self) -> float:
        return min(self.retention.values())

    def objectives(self, objective: str, skills: list[str]) -> list[float]:
        if objective == "pareto":
            return [self.retention[s] for s in skills]
        return [self.min_retention]

    def to_dict(self) -> dict[str, Any]:
        return {
            "retention": self.retention,
            "min_retention": self.min_retention,
            "feasible": self.feasible,
            "degraded": self.degraded,
            "violation": self.violation,
            "values": self.values,
        }


# the probe metric that names a probe set's skill, by the set's kind
HEADLINE = {"tool-calls": "exact", "contains": "pass"}


def _skill_keys(sets: EvalSets) -> dict[str, tuple[str, str]]:
    """Each candidate skill's name and its (set, metric) key: a perplexity set by its name, a
    probe set as ``NAME/METRIC``."""
    keys = {d.name: (d.name, "perplexity") for d in sets.data}
    for p in sets.probes:
        keys[f"{p.name}/{HEADLINE[p.kind]}"] = (p.name, HEADLINE[p.kind])
    return keys


def _direction(key: tuple[str, str]) -> Direction:
    """A perplexity is better lower; a probe's rate higher."""
    return "lower" if key[1] == "perplexity" else "higher"


def _best(key: tuple[str, str], sources: Mapping[str, Values], reference: str) -> float | None:
    others = [v[key] for k, v in sources.items() if k != reference and key in v]
    if not others:
        return None
    return min(others) if _direction(key) == "lower" else max(others)


def skills_of(sets: EvalSets, sources: Mapping[str, Values], reference: str) -> list[str]:
    """The perplexity sets and probe metrics on which a source beats ``reference`` by more
    than noise (`MIN_GAIN`, `MIN_RATE_GAIN`)."""
    out = []
    for name, key in _skill_keys(sets).items():
        ref, best = sources[reference].get(key), _best(key, sources, reference)
        if ref is None or best is None:
            continue
        if _direction(key) == "lower":
            gained = best <= ref * (1 - MIN_GAIN)
        else:
            gained = best >= ref + MIN_RATE_GAIN
        if gained:
            out.append(name)
    if not out:
        raise EvaluationError(
            f"no source is better than the reference {reference} on any perplexity set or "
            f"probe (by {MIN_GAIN:.0%} of a perplexity or {MIN_RATE_GAIN:g} of a probe rate), "
            "so there is no skill to keep; give the sets each fine-tune was trained for "
            "(--eval NAME=FILE) and the base as --reference."
        )
    return out


def score(
    sets: EvalSets,
    sources: Mapping[str, Values],
    reference: str,
    merged: Values,
    skills: list[str] | None = None,
) -> Score:
    """The score of the merged model's ``merged`` values against the ``sources``' (on the
    ``skills``, by default those of these sets: the search fixes them on the validation split,
    so that the test split reports the same ones)."""
    skills = skills if skills is not None else skills_of(sets, sources, reference)
    keys = _skill_keys(sets)
    keep = {}
    for s in skills:
        key = keys[s]
        best = _best(key, sources, reference)
        assert best is not None  # a skill has a source's value (skills_of)
        kept = retention(sources[reference][key], merged[key], best, _direction(key))
        keep[s] = math.nan if kept is None else kept
    degraded, violation = [], 0.0
    for key in merged:
        row = compare_row(
            key[0],
            key[1],
            _direction(key),
            {k: v[key] for k, v in sources.items()},
            "merged",
            merged[key],
        )
        if row.flag in ("degraded", "failed") and row.ratio is not None:
            degraded.append(f"{key[0]}/{key[1]} (ratio {row.ratio:.2f})")
            violation += min(row.ratio, 10.0) - DEGRADED
    values = {f"{k[0]}/{k[1]}": v for k, v in merged.items()}
    return Score(keep, values, degraded, violation)
