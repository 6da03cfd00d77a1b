"""`alloy demo`: two specialists trained in minutes, merged every way, measured, reported."""

from __future__ import annotations

import time
from pathlib import Path

import click

from alloy.cli.common import handle_errors


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("alloy-demo"),
    show_default=True,
    help="Where the corpora, models, merges and report go (an earlier demo there is replaced).",
)
@click.option(
    "--size",
    type=click.Choice(["small", "full"]),
    default="full",
    show_default=True,
    help="small: fewer examples and steps (a quicker, rougher run).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@handle_errors
def demo(out: Path, size: str, seed: int) -> None:
    """Train a tiny Llama base and two specialists (an encouraging task-manager persona and a
    tool caller), as full fine-tunes and LoRA adapters; check, analyze and recommend; merge
    them with the recommended method and the alternatives; evaluate every model on held-out
    data and write a report. A few minutes on a laptop CPU; needs transformers and peft."""
    from alloy.demo.pipeline import run_demo, summary

    started = time.perf_counter()
    result = run_demo(out, size=size, seed=seed, echo=click.echo)
    click.echo()
    click.echo(summary(result))
    click.echo(f"done in {time.perf_counter() - started:.0f} s")
