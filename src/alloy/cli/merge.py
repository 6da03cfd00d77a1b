"""`alloy merge`, `alloy plan`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from alloy.cli.common import F, atomic_output, handle_errors, setup_logging
from alloy.cli.eval import EXIT_FAILED, any_failed, print_evaluation, probe_option
from alloy.io.sharding import human

STRICT_HELP = (
    "Refuse what Alloy otherwise ignores as mergekit does (unknown, misplaced or repeated keys, "
    "parameters the method does not take) and method fallbacks (slerp over 3+ models)."
)

RESUME_HELP = (
    "Continue a merge into OUT that was killed or interrupted, from the complete shards it "
    "left in its temporary directory (same bytes as an uninterrupted run). Refused, with the "
    "reason, if the config, an input, Alloy's version or an option that changes the bytes "
    "(--out-shard-size, --device, --random-seed) differs; with nothing to resume it says so "
    "and starts. A run without --resume starts over and removes what an interrupted run left "
    "(docs/safety.md)."
)


def _mergekit_compat(fn: F) -> F:
    """mergekit options that Alloy accepts for drop-in use; Alloy is always lazy and streaming."""
    for flag in (
        "--lazy-unpickle",
        "--low-cpu-memory",
        "--read-to-gpu",
        "--multi-gpu",
        "--clone-tensors",
        "--async-write",
        "--safe-serialization",
        "--trust-remote-code",
    ):
        fn = click.option(
            flag, is_flag=True, hidden=True, help="accepted for mergekit compatibility"
        )(fn)
    for opt in ("--lora-merge-cache", "--lora-merge-dtype", "--write-threads"):
        fn = click.option(opt, hidden=True, default=None)(fn)
    return fn


def _eval_options(device: str, batch_size: int, assistant_only: bool, progress: bool) -> Any:
    """The evaluation options of `alloy merge --eval/--probe`."""
    from alloy.evaluate.models import EvalOptions

    return EvalOptions(
        device=device, batch_size=batch_size, assistant_only=assistant_only, progress=progress
    )


def _print_written(result: Any) -> None:
    """What the merge wrote: method, tensors, size, time, and each file with its size."""
    seconds = result.report["run"]["merge_seconds"] if result.report else result.seconds
    click.echo(
        f"merged with {result.method}: {result.tensors} tensors, "
        f"{human(result.bytes_written)}, in {seconds:.1f} s -> {result.out_dir}"
    )
    if result.resumed_shards is not None:
        click.echo(
            f"resumed: {result.resumed_shards} of {result.shards} shards were kept from the "
            "interrupted run (verified), the rest merged now"
        )
    for f in result.files:
        click.echo(f"  {f}  ({human((result.out_dir / f).stat().st_size)})")


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda (or cuda:N), mps")
@click.option("--cuda", is_flag=True, help="Same as --device cuda.")
@click.option(
    "--out-shard-size",
    default="5GB",
    show_default=True,
    help="Largest output shard: bytes, or 500MB, 2GB, 1.5GiB.",
)
@click.option("--random-seed", type=int, default=None, help="Seed for DARE and DELLA (default 0).")
@click.option(
    "--copy-tokenizer/--no-copy-tokenizer",
    default=True,
    show_default=True,
    help="Copy tokenizer files, generation config and chat template from the base.",
)
@click.option("--write-model-card/--no-write-model-card", default=True, hidden=True)
@click.option(
    "--allow-crimes", is_flag=True, help="Allow merging models of different architectures."
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists and is not empty.")
@click.option("--resume", is_flag=True, help=RESUME_HELP)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option(
    "--eval",
    "eval_data",
    multiple=True,
    metavar="[NAME=]FILE",
    help="Evaluate the merge against its sources on this perplexity set (repeatable).",
)
@probe_option
@click.option(
    "--assistant-only", is_flag=True, help="Chat eval data: loss on assistant turns only."
)
@click.option("--eval-batch-size", type=int, default=4, show_default=True)
@click.option("--eval-strict", is_flag=True, help=f"Exit {EXIT_FAILED} when a set is `failed`.")
@click.option(
    "--lora-base",
    default=None,
    metavar="BASE",
    help="Base model of inputs that are bare LoRA adapter directories "
    "(default: their adapter_config.json's base_model_name_or_path).",
)
@click.option(
    "--gguf",
    "gguf_type",
    type=click.Choice(["F32", "F16", "BF16", "Q8_0"], case_sensitive=False),
    default=None,
    help="Also write the merge as OUT/<name>.<TYPE>.gguf (llama.cpp, Ollama).",
)
@click.option("-j", "--num-threads", type=int, default=None, help="torch threads.")
@click.option("--transformers-cache", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("-v", "--verbose", count=True, help="-v for info, -vv for debug.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, errors only.")
@_mergekit_compat
@handle_errors
@atomic_output
def merge(
    config: Path,
    out: Path,
    device: str,
    cuda: bool,
    out_shard_size: str,
    random_seed: int | None,
    copy_tokenizer: bool,
    write_model_card: bool,
    allow_crimes: bool,
    force: bool,
    resume: bool,
    strict: bool,
    eval_data: tuple[str, ...],
    probes: tuple[tuple[str, str], ...],
    assistant_only: bool,
    eval_batch_size: int,
    eval_strict: bool,
    lora_base: str | None,
    gguf_type: str | None,
    num_threads: int | None,
    transformers_cache: Path | None,
    verbose: int,
    quiet: bool,
    **_compat: Any,
) -> None:
    """Merge the models of CONFIG (mergekit YAML) into the directory OUT."""
    import torch

    from alloy.api import merge as run_merge
    from alloy.devices import check_count

    setup_logging(verbose, quiet)
    progress = not quiet and sys.stderr.isatty()
    eval_options = None
    if eval_data or probes:
        device_ = "cuda" if cuda else device
        eval_options = _eval_options(device_, eval_batch_size, assistant_only, progress)
    threads = check_count(num_threads, "num_threads", "--num-threads")
    if threads is not None:
        torch.set_num_threads(threads)
    if transformers_cache is not None:
        os.environ["HF_HUB_CACHE"] = str(transformers_cache)
    try:
        result = run_merge(
            config,
            out,
            device="cuda" if cuda else device,
            out_shard_size=out_shard_size,
            random_seed=random_seed,
            copy_tokenizer=copy_tokenizer,
            allow_crimes=allow_crimes,
            force=force,
            strict=strict,
            progress=progress,
            eval_data=list(eval_data),
            eval_probes=list(probes),
            eval_options=eval_options,
            lora_base=lora_base,
            write_model_card=write_model_card,
            gguf=gguf_type,
            resume=resume,
        )
    except KeyboardInterrupt as e:  # where the complete shards were kept, if they were
        from alloy._merging import RESUME_HINT

        hint = getattr(e, RESUME_HINT, None)
        if hint:
            click.echo(hint, err=True)
        raise
    if not quiet:
        _print_written(result)
    if result.evaluation is not None:
        ev = result.evaluation.to_dict()
        if not quiet:
            click.echo()
            print_evaluation(ev)
        if eval_strict and any_failed(ev):
            click.echo(
                f"error: the merge failed on a set; see {result.out_dir / 'report.md'}", err=True
            )
            sys.exit(EXIT_FAILED)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--tensor", "tensor", default=None, help="Show the inputs and parameters of one tensor."
)
@click.option("--out-shard-size", default="5GB", show_default=True)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option("--lora-base", default=None, metavar="BASE", help="As for `alloy merge`.")
@click.option("-v", "--verbose", count=True)
@handle_errors
def plan(
    config: Path,
    tensor: str | None,
    out_shard_size: str,
    strict: bool,
    lora_base: str | None,
    verbose: int,
) -> None:
    """Show what merging CONFIG will read, write and need in memory (reads headers only)."""
    from alloy.api import plan as make_plan
    from alloy.plan.describe import describe_plan, describe_tensor

    setup_logging(verbose, False)
    the_plan = make_plan(config, out_shard_size=out_shard_size, strict=strict, lora_base=lora_base)
    click.echo(describe_tensor(the_plan, tensor) if tensor else describe_plan(the_plan))
