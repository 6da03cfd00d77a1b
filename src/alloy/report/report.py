"""The merge report: report.json (the record), rendered as report.md, report.html and PNGs.

report.json is the source of truth; `alloy report OUT` renders the other files from it again.
Sections: Merge Config, Source Model Inventory, Evaluation Comparison, Method Rationale,
Warnings and Notes, Run (wall time, peak memory).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from alloy._version import __version__
from alloy.errors import OutputError
from alloy.io.reportfile import check_report_shape, load_report_json
from alloy.io.sharding import human
from alloy.report.blocks import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Para,
    Table,
    to_html,
    to_markdown,
)
from alloy.report.card import set_card_evaluation
from alloy.report.distance_blocks import distance_blocks
from alloy.report.inventory import inventory_table
from alloy.report.plots import EVAL_PNG, LAYERS_PNG, evaluation_plot, layers_plot
from alloy.report.vocabulary import vocabulary_blocks

FORMAT = "alloy-merge-report"
VERSION = 1
RATIO_NOTE = (
    "Ratio: how many times worse the merged model is than the best source, per the metric's "
    "direction: merged / best for perplexity (lower is better), best / merged for probe scores "
    "(higher is better). Above 1.10 the set is flagged `degraded`, above 2 `failed`."
)


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS;
    psutil's peak working set on Windows)."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if v == "inf" or (isinstance(v, float) and math.isinf(v)):
        return "∞"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def comparison_table(evaluation: dict[str, Any]) -> Table:
    labels = [m["label"] for m in evaluation["models"]]
    merged = next(m["label"] for m in evaluation["models"] if m["role"] == "merged")
    headers = ["set", "metric", *[f"{x} (merged)" if x == merged else x for x in labels]]
    headers += ["best source", "ratio", "flag"]
    rows = []
    for r in evaluation["rows"]:
        cells = [r["set"], f"{r['metric']} ({'↓' if r['direction'] == 'lower' else '↑'})"]
        cells += [fmt(r["values"].get(x)) for x in labels]
        cells += [r.get("best_source") or "—", fmt(r.get("ratio")), r["flag"]]
        rows.append(cells)
    n = len(labels)
    return Table(headers, rows, {*range(2, 2 + n), 3 + n})


def flag_counts(evaluation: dict[str, Any]) -> dict[str, int]:
    counts = {"ok": 0, "degraded": 0, "failed": 0, "n/a": 0}
    for r in evaluation["rows"]:
        counts[r["flag"]] += 1
    return counts


def evaluation_warnings(evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return []
    out = [f"{r['flag']}: {r['suggestion']}" for r in evaluation["rows"] if r.get("suggestion")]
    return out + list(evaluation.get("notes", []))


def card_section(evaluation: dict[str, Any]) -> str:
    """The model card's evaluation section (Markdown)."""
    return to_markdown(
        [
            Heading("Evaluation"),
            Para("Measured by Alloy against the source models (see report.md)."),
            comparison_table(evaluation),
            Para(RATIO_NOTE),
        ]
    )


def _evaluation_blocks(report: dict[str, Any], images: set[str]) -> list[Block]:
    ev = report.get("evaluation")
    blocks: list[Block] = [Heading("Evaluation Comparison")]
    if not ev:
        blocks.append(
            Para(
                "Not run. Evaluate with `alloy merge CONFIG OUT --eval NAME=FILE`, or afterwards "
                "with `alloy eval OUT --data NAME=FILE --write-report`."
            )
        )
        return blocks
    sets = ", ".join(f"`{s['name']}` ({s['kind']}, `{s['file']}`)" for s in ev["sets"])
    blocks += [Para(f"Sets: {sets}."), comparison_table(ev), Para(RATIO_NOTE)]
    if EVAL_PNG in images:
        blocks.append(Image(EVAL_PNG, "each model relative to the best source, per set"))
    merged = next(m["label"] for m in ev["models"] if m["role"] == "merged")
    for name, per_model in ev.get("examples", {}).items():
        shown = per_model.get(merged, [])
        if shown:
            blocks.append(Para(f"First outputs of the merged model on `{name}`:"))
            blocks.append(
                Bullets([f"{_short(e['prompt'])} → {_short(e['output'])}" for e in shown])
            )
    return blocks


def _short(x: Any, limit: int = 160) -> str:
    text = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
    text = " ".join(text.split())
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def render(report: dict[str, Any], images: set[str] = frozenset()) -> list[Block]:  # type: ignore[assignment]
    """The report as blocks, from its record; ``images`` names the PNGs that exist."""
    merge, run = report["merge"], report["run"]
    n_models = len(report["merge"]["models"])
    summary = (
        f"Merged {n_models} models with `{merge['method']}` into `{report['name']}`: "
        f"{merge['tensors']} tensors, {human(merge['bytes_written'])}, in "
        f"{run['merge_seconds']:.1f} s."
    )
    ev = report.get("evaluation")
    if ev:
        c = flag_counts(ev)
        summary += (
            f" Evaluation: {c['ok']} ok, {c['degraded']} degraded, {c['failed']} failed"
            + (f", {c['n/a']} without a comparable source" if c["n/a"] else "")
            + "."
        )
    blocks: list[Block] = [
        Heading(f"Merge report: {report['name']}", 1),
        Para(summary),
        Heading("Merge Config"),
        Code(merge["config_yaml"], "yaml"),
        Heading("Source Model Inventory"),
        inventory_table(report["inventory"]),
        *vocabulary_blocks(report),
        *_evaluation_blocks(report, images),
        Heading("Method Rationale"),
    ]
    rat = report["rationale"]
    blocks.append(Para(rat["description"]))
    if rat.get("statements"):
        blocks.append(Bullets(rat["statements"]))
    if LAYERS_PNG in images:
        blocks.append(Image(LAYERS_PNG, "task-vector size per layer"))
    blocks += distance_blocks(report.get("distance"))
    warnings = list(report.get("warnings", [])) + evaluation_warnings(ev)
    blocks += [Heading("Warnings and Notes"), Bullets(warnings) if warnings else Para("None.")]
    rows = [
        ["wall time (total)", f"{run['wall_seconds']:.2f} s"],
        ["merge", f"{run['merge_seconds']:.2f} s"],
    ]
    if run.get("eval_seconds") is not None:
        rows.append(["evaluation", f"{run['eval_seconds']:.2f} s"])
    rows += [
        ["peak memory (process, after merging)", human(run["peak_rss_merge_bytes"])],
        ["peak memory (process, at the end)", human(run["peak_rss_bytes"])],
        ["device", str(run.get("device", "cpu"))],
        ["Alloy", str(report.get("alloy_version", __version__))],
    ]
    blocks += [Heading("Run"), Table(["", "value"], rows, {1})]
    return blocks


def _check(report: dict[str, Any], where: Path) -> None:
    if report.get("format") != FORMAT:
        raise OutputError(f"{where} is not an Alloy merge report (no format: {FORMAT!r}).")
    if report.get("version", 0) > VERSION:
        raise OutputError(
            f"{where} was written by a newer Alloy (report version {report['version']}); "
            "upgrade Alloy to render it."
        )


def write_report(report: dict[str, Any], out: Path, *, html: bool = False) -> list[str]:
    """Write report.json, its PNGs, report.md (and report.html); update the model card's
    evaluation section. Returns the names written."""
    _check(report, out / "report.json")
    written = ["report.json"]
    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)
    (out / "report.json").write_text(text + "\n", encoding="utf-8")
    images = set()
    ev = report.get("evaluation")
    if ev and evaluation_plot(ev, out / EVAL_PNG):
        images.add(EVAL_PNG)
    if layers_plot(report["rationale"].get("facts", {}), out / LAYERS_PNG):
        images.add(LAYERS_PNG)
    written += sorted(images)
    blocks = render(report, images)
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    written.append("report.md")
    if html:
        page = to_html(blocks, f"Merge report: {report['name']}", out)
        (out / "report.html").write_text(page, encoding="utf-8")
        written.append("report.html")
    if ev and (out / "README.md").is_file():
        set_card_evaluation(out / "README.md", card_section(ev))
        written.append("README.md")
    return written


def record_evaluation(
    out: Path, evaluation: dict[str, Any], seconds: float | None = None
) -> list[str]:
    """Put ``evaluation`` (and the time it took) into the merge report in ``out`` and render the
    report again, as HTML too when it was. Returns the names written."""
    report = read_report(out)
    report["evaluation"] = evaluation
    if seconds is not None:
        report["run"]["eval_seconds"] = seconds
    return write_report(report, out, html=(out / "report.html").is_file())


def read_report(out: Path) -> dict[str, Any]:
    path = out / "report.json"
    if not path.is_file():
        raise OutputError(f"{out} has no report.json; is it the output directory of a merge?")
    report = load_report_json(path)
    _check(report, path)
    check_report_shape(report, path)
    return report
