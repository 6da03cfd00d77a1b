"""Medians per tool and method, and the Alloy / mergekit and wall / floor ratios."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from compare import Comparison
from rounds import RunRecord, method_tools
from settings import ALLOY_ONLY, RANDOM_METHODS


@dataclass
class ToolSummary:
    runs_ok: int
    runs_failed: int
    wall_s_median: float | None
    peak_rss_bytes_median: float | None
    read_bytes_median: float | None
    error: str | None


@dataclass
class MethodSummary:
    tools: dict[str, ToolSummary]
    time_ratio: float | None
    rss_ratio: float | None
    compared: bool
    max_rel_diff: float | None
    comparisons: list[Comparison]
    floor_s: float | None = None  # read the method's inputs once + write one output
    floor_ratio: dict[str, float | None] = field(default_factory=dict)  # tool: wall / floor

    @property
    def problems(self) -> list[str]:
        return sorted({p for c in self.comparisons for p in c.problems})


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_tool(records: list[RunRecord]) -> ToolSummary:
    ok = [r for r in records if r.ok and r.measurement is not None]
    failed = [r for r in records if not r.ok]
    return ToolSummary(
        runs_ok=len(ok),
        runs_failed=len(failed),
        wall_s_median=median_or_none([float(r.measurement["wall_s"]) for r in ok if r.measurement]),
        peak_rss_bytes_median=median_or_none([float(r.peak_rss_bytes or 0) for r in ok]),
        read_bytes_median=median_or_none(
            [float(r.measurement["read_bytes"]) for r in ok if r.measurement]
        ),
        error=failed[0].error if failed else None,
    )


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize_method(
    method: str,
    records: list[RunRecord],
    comparisons: list[Comparison],
    tools: list[str],
    floor_s: float | None = None,
) -> MethodSummary:
    by_tool = {
        t: summarize_tool([r for r in records if r.tool == t]) for t in method_tools(method, tools)
    }
    alloy, mergekit = by_tool.get("alloy"), by_tool.get("mergekit")
    diffs = [c.max_rel_diff for c in comparisons if c.max_rel_diff is not None]
    return MethodSummary(
        tools=by_tool,
        time_ratio=ratio(
            alloy.wall_s_median if alloy else None, mergekit.wall_s_median if mergekit else None
        ),
        rss_ratio=ratio(
            alloy.peak_rss_bytes_median if alloy else None,
            mergekit.peak_rss_bytes_median if mergekit else None,
        ),
        compared=method not in RANDOM_METHODS and method not in ALLOY_ONLY,
        max_rel_diff=max(diffs) if diffs else None,
        comparisons=comparisons,
        floor_s=floor_s,
        floor_ratio={t: ratio(s.wall_s_median, floor_s) for t, s in by_tool.items()},
    )
