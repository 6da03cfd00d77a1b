"""`alloy eval` (the merged model against its sources) and `alloy report` (re-render)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from alloy.cli.common import handle_errors, setup_logging

# Exit status of `alloy eval --strict` / `alloy merge --eval-strict` when a set failed.
EXIT_FAILED = 3


def probe_option(fn: Any) -> Any:
    return click.option(
        "--probe",
        "probes",
        type=(click.Choice(["tool-calls", "contains"]), str),
        multiple=True,
        metavar="KIND [NAME=]FILE",
        help="A probe set: tool-calls or contains, and its JSONL file (repeatable).",
    )(fn)


def print_evaluation(ev: dict[str, Any]) -> None:
    """The comparison table, then the flags with their suggestions and the notes."""
    from alloy.report.blocks import table_text
    from alloy.report.report import RATIO_NOTE, comparison_table, evaluation_warnings

    click.echo(table_text(comparison_table(ev)))
    click.echo()
    click.echo(RATIO_NOTE.replace("`", ""))
    for w in evaluation_warnings(ev):
        click.echo(f"- {w}")


def any_failed(ev: dict[str, Any]) -> bool:
    return any(r["flag"] == "failed" for r in ev["rows"])


@click.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="[NAME=]FILE",
    help="A perplexity set: plain text, or JSONL with `text` or chat `messages` (repeatable).",
)
@probe_option
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda (or cuda:N), mps")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="auto: float32 on the CPU, the checkpoint's dtype on a GPU.",
)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--max-length", type=int, default=None, help="Window length (default: the context).")
@click.option("--stride", type=int, default=None, help="New tokens per window (default: half).")
@click.option("--assistant-only", is_flag=True, help="Chat data: loss on assistant turns only.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True, help="Probes.")
@click.option("--trust-remote-code", is_flag=True, help="Let transformers run model code.")
@click.option("--strict", is_flag=True, help=f"Exit {EXIT_FAILED} when a set is `failed`.")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.option(
    "--write-report",
    is_flag=True,
    help="Record the evaluation in MERGED's report (report.json, report.md, model card).",
)
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@handle_errors
def eval_(
    models: tuple[Path, ...],
    data: tuple[str, ...],
    probes: tuple[tuple[str, str], ...],
    device: str,
    dtype: str,
    batch_size: int,
    max_length: int | None,
    stride: int | None,
    assistant_only: bool,
    max_new_tokens: int,
    trust_remote_code: bool,
    strict: bool,
    as_json: bool,
    write_report: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Evaluate MERGED against its SOURCES: alloy eval MERGED [SOURCE...].

    Without SOURCE, the sources recorded in MERGED/report.json (written by `alloy merge`) are
    used. Every model is measured on every set; the merged model is compared with the best
    source per set and metric, and flagged `degraded` (more than 10% worse) or `failed`
    (more than 2x worse).
    """
    from alloy.api import evaluate_merge, record_evaluation
    from alloy.evaluate.models import EvalOptions

    setup_logging(verbose, quiet)
    options = EvalOptions(
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        assistant_only=assistant_only,
        max_new_tokens=max_new_tokens,
        trust_remote_code=trust_remote_code,
        progress=not quiet and sys.stderr.isatty(),
    )
    merged, *sources = models
    evaluation = evaluate_merge(
        merged, sources or None, data=list(data), probes=list(probes), options=options
    )
    if write_report:
        record_evaluation(merged, evaluation)
    ev = evaluation.to_dict()
    if as_json:
        click.echo(json.dumps(ev, indent=2, ensure_ascii=False))
    else:
        print_evaluation(ev)
        if write_report:
            click.echo(f"recorded in {merged / 'report.md'}")
    if strict and any_failed(ev):
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-html", is_flag=True, help="Skip report.html.")
@handle_errors
def report(out: Path, no_html: bool) -> None:
    """Render OUT's merge report again from OUT/report.json: report.md, report.html (one
    self-contained page), the PNG plots and the model card's evaluation table."""
    from alloy.api import render_report

    written = render_report(out, html=not no_html)
    for name in written:
        click.echo(str(out / name))
