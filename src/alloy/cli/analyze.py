"""`alloy analyze` and `alloy recommend`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from alloy.cli.check import echo_json, exit_codes
from alloy.cli.common import F, handle_errors, setup_logging
from alloy.io.guard import guard_write, model_paths

R = TypeVar("R")


def _analysis_options(fn: F) -> F:
    for decorator in reversed(
        [
            click.argument("models", nargs=-1, required=True),
            click.option(
                "--base", default=None, help="The base model the fine-tunes started from."
            ),
            click.option(
                "--density",
                type=float,
                default=0.5,
                show_default=True,
                help="TIES density at which sign conflicts are counted.",
            ),
            click.option(
                "--sample",
                type=float,
                default=None,
                help="Read this fraction of each matrix's rows (seeded) instead of every entry.",
            ),
            click.option(
                "--seed", type=int, default=0, show_default=True, help="Seed of --sample."
            ),
            click.option(
                "-j", "--workers", type=int, default=None, help="Tensors analyzed at once."
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON."),
            click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
        ]
    ):
        fn = decorator(fn)
    return fn


def _progress(quiet: bool) -> tuple[Any, Callable[[str], None] | None]:
    if quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(unit=" tensors", desc="alloy analyze", dynamic_ncols=True, file=sys.stderr)
    return bar, lambda _name: bar.update(1)


def _run(fn: Callable[..., R], models: tuple[str, ...], quiet: bool, **options: Any) -> R:
    """``fn`` (`alloy.api.analyze` or `alloy.api.recommend`) on ``models``, with a progress
    bar of the tensors on a terminal unless ``quiet``."""
    bar, on_tensor = _progress(quiet)
    try:
        return fn(list(models), on_tensor=on_tensor, **options)
    finally:
        if bar is not None:
            bar.close()


@click.command()
@_analysis_options
@click.option("--tensors", "per_tensor", is_flag=True, help="Also list every tensor.")
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write PNG plots of the per-layer curves into this directory.",
)
@handle_errors
def analyze(
    models: tuple[str, ...],
    base: str | None,
    density: float,
    sample: float | None,
    seed: int,
    workers: int | None,
    as_json: bool,
    quiet: bool,
    per_tensor: bool,
    plots: Path | None,
) -> None:
    """Statistics of the task vectors of MODEL... against --base (or, without a base, of the
    weights): norms, cosines, sign conflicts, fraction changed, concentration; per tensor,
    per layer, per module kind. Streams one tensor at a time."""
    from alloy.analysis.tables import render
    from alloy.api import analyze as run

    setup_logging(0, quiet)
    if plots is not None:
        guard_write(plots, model_paths([*models, base]), "--plots")
    result = _run(
        run,
        models,
        quiet or as_json,
        base=base,
        density=density,
        sample=sample,
        seed=seed,
        workers=workers,
    )
    written: list[Path] = []
    if plots is not None:
        from alloy.analysis.plots import write_plots

        written = write_plots(result, plots)
    if as_json:
        data = result.to_dict(tensors=True)
        data["plots"] = [str(p) for p in written]
        echo_json(data)
        return
    click.echo(render(result, per_tensor=per_tensor))
    for p in written:
        click.echo(f"plot: {p}")


@click.command()
@_analysis_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the recommended config (YAML, with the rationale as comments) here.",
)
@exit_codes
def recommend(
    models: tuple[str, ...],
    base: str | None,
    density: float,
    sample: float | None,
    seed: int,
    workers: int | None,
    as_json: bool,
    quiet: bool,
    output: Path | None,
) -> None:
    """Recommend a merge method and its parameters for MODEL... (fine-tunes of --base), with
    the reasons. Exit status: 0 a merge is recommended, 1 the models should not be merged
    (incompatible, or retraining is likely better), 2 usage or I/O error."""
    from alloy.analysis.recommend import write_config
    from alloy.api import recommend as run

    setup_logging(0, quiet)
    if output is not None:
        guard_write(output, model_paths([*models, base]), "--output")
    rec = _run(
        run,
        models,
        quiet or as_json,
        base=base,
        density=density,
        sample=sample,
        seed=seed,
        workers=workers,
    )
    if output is not None and rec.config is not None:
        write_config(rec, output)
    if as_json:
        echo_json(rec.to_dict())
    else:
        click.echo(rec.render())
        if output is not None and rec.config is not None:
            click.echo(f"\nwrote {output}")
    sys.exit(0 if rec.verdict == "merge" else 1)
