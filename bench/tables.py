"""The markdown tables the run prints: results, Alloy-only methods, I/O, targets, failures."""

from __future__ import annotations

from settings import (
    ALLOY_ONLY,
    FLOOR_TARGETS,
    GIB,
    REFERENCE_METHOD,
    RSS_LIMIT_7B,
    RSS_TARGET,
    TIME_TARGETS,
)
from summary import MethodSummary, ToolSummary, ratio


def fmt_time(s: ToolSummary | None) -> str:
    if s is None:
        return "not run"
    return f"{s.wall_s_median:.1f} s" if s.wall_s_median is not None else "failed"


def fmt_rss(s: ToolSummary | None) -> str:
    if s is None:
        return "not run"
    value = s.peak_rss_bytes_median
    return f"{value / GIB:.2f} GiB" if value is not None else "failed"


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def fmt_diff(method: str, s: MethodSummary) -> str:
    if method in ALLOY_ONLY:
        return "n/a (Alloy only)"
    if not s.compared:
        return "skipped (random)"
    text = f"{s.max_rel_diff:.2e}" if s.max_rel_diff is not None else "-"
    return f"{text} ({len(s.problems)} problems)" if s.problems else text


def markdown_table(summary: dict[str, MethodSummary]) -> str:
    lines = [
        "| method | alloy time | mergekit time | time ratio | alloy peak RSS "
        "| mergekit peak RSS | RSS ratio | max rel diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        alloy, mk = s.tools.get("alloy"), s.tools.get("mergekit")
        mk_time = "n/a" if method in ALLOY_ONLY else fmt_time(mk)
        mk_rss = "n/a" if method in ALLOY_ONLY else fmt_rss(mk)
        lines.append(
            f"| {method} | {fmt_time(alloy)} | {mk_time} | {fmt_ratio(s.time_ratio)} "
            f"| {fmt_rss(alloy)} | {mk_rss} | {fmt_ratio(s.rss_ratio)} | {fmt_diff(method, s)} |"
        )
    return "\n".join(lines)


def alloy_only_table(summary: dict[str, MethodSummary]) -> str | None:
    """The Alloy-only methods against Alloy's ties on the same models (None if none ran)."""
    methods = [m for m in summary if m in ALLOY_ONLY]
    if not methods:
        return None
    ref = summary.get(REFERENCE_METHOD)
    ref_alloy = ref.tools.get("alloy") if ref else None
    ref_time = ref_alloy.wall_s_median if ref_alloy else None
    ref_rss = ref_alloy.peak_rss_bytes_median if ref_alloy else None
    lines = [
        f"| method | alloy time | {REFERENCE_METHOD} time | time vs {REFERENCE_METHOD} "
        f"| alloy peak RSS | {REFERENCE_METHOD} peak RSS | RSS vs {REFERENCE_METHOD} |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        alloy = summary[method].tools.get("alloy")
        time = alloy.wall_s_median if alloy else None
        rss = alloy.peak_rss_bytes_median if alloy else None
        lines.append(
            f"| {method} | {fmt_time(alloy)} | {fmt_time(ref_alloy)} "
            f"| {fmt_ratio(ratio(time, ref_time))} | {fmt_rss(alloy)} | {fmt_rss(ref_alloy)} "
            f"| {fmt_ratio(ratio(rss, ref_rss))} |"
        )
    return "\n".join(lines)


def fmt_bytes(value: float | None) -> str:
    return f"{value / 1e9:.1f} GB" if value is not None else "-"


def io_table(summary: dict[str, MethodSummary], cache: str) -> str:
    """Wall time against the I/O floor, and the bytes each tool read from storage."""
    lines = [
        "| method | cache | floor | alloy / floor | mergekit / floor | alloy read "
        "| mergekit read |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        alloy, mk = s.tools.get("alloy"), s.tools.get("mergekit")
        floor = f"{s.floor_s:.1f} s" if s.floor_s is not None else "not measured"
        lines.append(
            f"| {method} | {cache} | {floor} | {fmt_ratio(s.floor_ratio.get('alloy'))} "
            f"| {fmt_ratio(s.floor_ratio.get('mergekit'))} "
            f"| {fmt_bytes(alloy.read_bytes_median if alloy else None)} "
            f"| {fmt_bytes(mk.read_bytes_median if mk else None)} |"
        )
    return "\n".join(lines)


def targets_7b_table(summary: dict[str, MethodSummary]) -> str:
    """The 7b targets: Alloy's peak RSS in absolute terms, its wall time against the floor."""
    lines = [
        "| method | alloy peak RSS | < 2 GiB | alloy / floor | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        alloy = s.tools.get("alloy")
        rss = alloy.peak_rss_bytes_median if alloy else None
        rss_ok = "not measured" if rss is None else "pass" if rss < RSS_LIMIT_7B else "FAIL"
        target = FLOOR_TARGETS.get(method)
        floor_ratio = s.floor_ratio.get("alloy")
        lines.append(
            f"| {method} | {fmt_rss(alloy)} | {rss_ok} | {fmt_ratio(floor_ratio)} "
            f"| {f'<= {target}x' if target else '-'} "
            f"| {verdict(floor_ratio, target) if target else '-'} |"
        )
    return "\n".join(lines)


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "pass" if value <= target else "FAIL"


def targets_table(summary: dict[str, MethodSummary]) -> str:
    lines = ["| method | time target | time | RSS target | RSS |", "|---|---|---|---|---|"]
    for method, s in summary.items():
        if method not in TIME_TARGETS:
            continue  # Alloy-only methods: no mergekit to compare with
        t_target = TIME_TARGETS[method]
        lines.append(
            f"| {method} | <= {t_target}x | {verdict(s.time_ratio, t_target)} "
            f"| <= {RSS_TARGET}x | {verdict(s.rss_ratio, RSS_TARGET)} |"
        )
    return "\n".join(lines)


def failures(summary: dict[str, MethodSummary]) -> str:
    """One line per tool and method that failed, with the first line of the error."""
    lines = []
    for method, s in summary.items():
        for tool, t in s.tools.items():
            if t.error:
                lines.append(f"- {method} / {tool}: {t.error.splitlines()[0]}")
    return "\n".join(lines)
