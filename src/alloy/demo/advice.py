"""Before the merges: `check`, `analyze` and `recommend` on one family of specialists."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from alloy.tabulate import percent


@dataclass
class Advice:
    """What `alloy check`, `analyze` and `recommend` said about base + two specialists."""

    mergeable: bool
    check: str  # the check's verdict line
    facts: str  # the measured task-vector statistics, in one line
    method: str | None
    config: dict[str, Any] | None  # the recommended merge config (float32)
    verdict: str  # "merge", "retrain" or "stop"
    rationale: str
    analysis: dict[str, Any]  # the analysis totals, for the report

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(values: list[float | None], pct: bool = False) -> str:
    return ", ".join(percent(v) if pct else ("-" if v is None else f"{v:.3f}") for v in values)


def advise(base: str, persona: str, tools: str) -> Advice:
    """Check the three models, analyze the two task vectors, recommend a merge."""
    from alloy.analysis.analyze import analyze
    from alloy.analysis.check import check
    from alloy.analysis.recommend import from_analysis

    report = check([base, persona, tools])
    if not report.mergeable():
        return Advice(False, report.verdict(), "", None, None, "stop", report.render(), {})
    a = analyze([persona, tools], base)
    m = a.metrics(a.total)
    facts = (
        f"relative norms {_fmt(m['relative_norm'], pct=True)}, cosine {_fmt(m['cosine'])}, "
        f"sign conflicts {_fmt([m['conflict']], pct=True)} at density {a.density:g}"
    )
    rec = from_analysis(a, dtype="float32")
    predicted = (rec.distance or {}).get("predicted") or {}
    if predicted.get("overall") is not None:
        facts += (
            f"; the {rec.method} merge predicted at {percent(predicted['overall'])} from the base "
            f"({predicted['kind']}; the specialists: {_fmt(m['relative_norm'], pct=True)})"
        )
    return Advice(
        True,
        report.verdict(),
        facts,
        rec.method,
        rec.config,
        rec.verdict,
        rec.rationale,
        {"total": m, "seconds": round(a.seconds, 2)},
    )
