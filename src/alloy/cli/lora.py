"""`alloy lora merge` and `alloy lora extract`."""

from __future__ import annotations

from pathlib import Path

import click

from alloy.api_tools import LORA_METHODS
from alloy.cli.common import F, atomic_output, handle_errors, setup_logging

_METHODS = LORA_METHODS


@click.group()
def lora() -> None:
    """LoRA adapters: merge several into one, or extract one from a fine-tune.

    To merge adapters into a full model, give them to `alloy merge` as `BASE+ADAPTER` (or as a
    bare adapter directory): they are applied on the fly.
    """


def _adapter_arg(value: str) -> tuple[str, float]:
    """``path`` or ``path:weight``."""
    path, sep, weight = value.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return value, 1.0


def _svd_options(fn: F) -> F:
    fn = click.option(
        "--device", default="cpu", show_default=True, help="cpu, cuda (or cuda:N), mps"
    )(fn)
    fn = click.option(
        "--randomized", is_flag=True, help="Randomized SVD (faster; needs --rank as the bound)."
    )(fn)
    fn = click.option(
        "--energy",
        type=float,
        default=None,
        help="Keep the fewest singular values holding this share of each module's ‖ΔW‖² "
        "(e.g. 0.9); with --rank, the rank is capped.",
    )(fn)
    fn = click.option("--rank", "-r", type=int, default=None, help="Rank of every module.")(fn)
    fn = click.option(
        "--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
        help="dtype of the written factors (default: the inputs').",
    )(fn)  # fmt: skip
    fn = click.option("--force", is_flag=True, help="Replace OUT if it exists and is not empty.")(
        fn
    )
    fn = click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed for random draws (DARE masks, randomized SVD).",
    )(fn)
    return fn


@lora.command("merge")
@click.argument("sources", nargs=-1, required=True)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--method", "-m", type=click.Choice(_METHODS), default=None,
    help="How to merge adapters given as paths (default ties; a config names its own).",
)  # fmt: skip
@click.option("--density", type=float, default=None, help="Share of each delta kept (ties, dare).")
@click.option("--lambda", "lambda_", type=float, default=None, help="Scale of the merged delta.")
@click.option(
    "--allow-different-bases",
    is_flag=True,
    help="Merge adapters whose base_model_name_or_path differ (the same model under two names).",
)
@_svd_options
@click.option("-v", "--verbose", count=True)
@handle_errors
@atomic_output
def merge(
    sources: tuple[str, ...],
    out: Path,
    method: str | None,
    density: float | None,
    lambda_: float | None,
    allow_different_bases: bool,
    rank: int | None,
    energy: float | None,
    randomized: bool,
    device: str,
    dtype: str | None,
    force: bool,
    seed: int,
    verbose: int,
) -> None:
    """Merge LoRA adapters into one PEFT adapter OUT.

    SOURCES is one merge config (YAML, the schema of `alloy merge`, models being adapters), or
    adapter directories, each optionally with a weight: `persona:0.6 tools:0.4`.
    `cat` is exact (the ranks add up); the other methods merge the full per-module deltas and
    re-factorize them by truncated SVD to --rank or --energy.
    """
    from alloy.api import lora_merge

    setup_logging(verbose, False)
    is_config = len(sources) == 1 and sources[0].endswith((".yml", ".yaml"))
    result = lora_merge(
        Path(sources[0]) if is_config else [_adapter_arg(s) for s in sources],
        out,
        method=method,
        density=density,
        lambda_=lambda_,
        rank=rank,
        energy=energy,
        randomized=randomized,
        device=device,
        seed=seed,
        dtype=dtype,
        force=force,
        allow_different_bases=allow_different_bases,
    )
    click.echo(result.table())
    for n in result.notes:
        click.echo(f"note: {n}")
    click.echo(f"merged {len(result.modules)} modules with {result.method} -> {result.out_dir}")


@lora.command("extract")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "model", required=True, help="The fine-tuned model (FT).")
@click.option("--base", "base", required=True, help="The model FT was fine-tuned from.")
@click.option(
    "--embeddings", is_flag=True, help="Also extract embedding deltas (lora_embedding_A/B)."
)
@_svd_options
@click.option("-v", "--verbose", count=True)
@handle_errors
@atomic_output
def extract(
    out: Path,
    model: str,
    base: str,
    embeddings: bool,
    rank: int | None,
    energy: float | None,
    randomized: bool,
    device: str,
    dtype: str | None,
    force: bool,
    seed: int,
    verbose: int,
) -> None:
    """Extract a LoRA adapter OUT with BASE + adapter ≈ FT (truncated SVD of FT − BASE)."""
    from alloy.api import lora_extract

    setup_logging(verbose, False)
    result = lora_extract(
        model,
        base,
        out,
        rank=rank,
        energy=energy,
        randomized=randomized,
        embeddings=embeddings,
        device=device,
        seed=seed,
        dtype=dtype,
        force=force,
    )
    click.echo(result.table())
    for n in result.notes:
        click.echo(f"note: {n}")
    click.echo(f"extracted {len(result.extracted)} modules -> {result.out_dir}")
