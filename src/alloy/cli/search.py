"""`alloy search`: find the merge config that keeps the most of each skill."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from alloy.cli.common import handle_errors, setup_logging

_KIND = click.Choice(["tool-calls", "contains"])


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--eval",
    "eval_data",
    multiple=True,
    metavar="[NAME=]FILE",
    help="A perplexity set, split into validation and test (repeatable).",
)
@click.option(
    "--probe",
    "probes",
    multiple=True,
    type=(_KIND, str),
    metavar="KIND [NAME=]FILE",
    help="A probe set, split into validation and test (repeatable).",
)
@click.option(
    "--test-eval",
    "test_data",
    multiple=True,
    metavar="NAME=FILE",
    help="The test split of the --eval set NAME (instead of splitting it).",
)
@click.option(
    "--test-probe",
    "test_probes",
    multiple=True,
    type=(_KIND, str),
    metavar="KIND NAME=FILE",
    help="The test split of the --probe set NAME.",
)
@click.option(
    "--guard",
    "guards",
    multiple=True,
    metavar="NAME",
    help="An --eval or --probe set that only guards against degradation and is never a "
    "skill to keep, such as general text no fine-tune trained on (repeatable).",
)
@click.option(
    "--reference",
    default=None,
    help="The base the fine-tunes started from [default: the config's base_model].",
)
@click.option(
    "--baseline",
    "baselines",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A fixed merge config measured beside the trials (repeatable).",
)
@click.option(
    "--trials",
    type=int,
    default=40,
    show_default=True,
    help="Trials in the study (a resumed study runs until it has this many).",
)
@click.option("--timeout", type=float, default=None, help="Stop starting trials after S seconds.")
@click.option(
    "--sampler", type=click.Choice(["tpe", "cmaes", "random"]), default="tpe", show_default=True
)
@click.option(
    "--objective",
    type=click.Choice(["min-retention", "pareto"]),
    default="min-retention",
    show_default=True,
    help="The smallest retention, or one objective per skill (a Pareto front).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="The sampler's seed.")
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Trials run at once (local processes, or Ray actors with --ray).",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Run the trials as Ray tasks on this cluster ('auto', 'ray://host:10001').",
)
@click.option("--resume", is_flag=True, help="Continue the study stored in OUT.")
@click.option(
    "--top",
    type=int,
    default=3,
    show_default=True,
    help="Best trials re-measured on the test split.",
)
@click.option(
    "--no-recommend", is_flag=True, help="Do not seed the search with `alloy recommend`'s config."
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--lora-base", default=None, help="The base of bare LoRA adapter directories.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def search(
    config: Path,
    out: Path,
    eval_data: tuple[str, ...],
    probes: tuple[tuple[str, str], ...],
    test_data: tuple[str, ...],
    test_probes: tuple[tuple[str, str], ...],
    guards: tuple[str, ...],
    reference: str | None,
    baselines: tuple[str, ...],
    trials: int,
    timeout: float | None,
    sampler: str,
    objective: str,
    seed: int,
    workers: int,
    ray_address: str | None,
    resume: bool,
    top: int,
    no_recommend: bool,
    device: str,
    batch_size: int,
    max_new_tokens: int,
    lora_base: str | None,
    quiet: bool,
) -> None:
    """Search CONFIG's ranges and choices for the merge that keeps the most of each skill;
    write best.yml, trials.md, trials.json, pareto.png and report.md into OUT."""
    from alloy.api_search import search as run
    from alloy.devices import check_device
    from alloy.evaluate.models import EvalOptions
    from alloy.search.run import SearchOptions

    setup_logging(0, quiet)
    options = SearchOptions(
        trials=trials,
        timeout=timeout,
        sampler=sampler,
        seed=seed,
        workers=workers,
        ray=ray_address,
        resume=resume,
        objective=objective,
        top=top,
        recommend=not no_recommend,
        progress=not quiet and sys.stderr.isatty(),
        guards=tuple(guards),
    )
    eval_options = EvalOptions(
        device=check_device(device), batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    result = run(
        config,
        out,
        eval_data=list(eval_data),
        eval_probes=list(probes),
        test_data=list(test_data),
        test_probes=list(test_probes),
        reference=reference,
        baselines=list(baselines),
        options=options,
        eval_options=eval_options,
        lora_base=lora_base,
    )
    click.echo((out / "report.md").read_text(encoding="utf-8"))
    click.echo(
        f"{result.trials} trials in {result.seconds:.0f} s; wrote {', '.join(result.files)} to {out}"
    )
