"""The public entry points besides merging: `check`, `inventory`, `analyze`, `recommend`,
`lora_merge` and `lora_extract`. Re-exported by `alloy.api` and `alloy`; every `alloy`
command calls one of them.

Arguments are checked here, before any model is opened, with errors that name the argument
and its command-line option (`alloy.errors.UsageError`, `alloy.errors.DeviceError`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloy.config.schema import ModelRef
from alloy.devices import check_count, check_device
from alloy.errors import EvaluationError, UsageError

if TYPE_CHECKING:  # the modules that compute are imported when called: `alloy` starts fast
    from alloy.analysis.analyze import Analysis
    from alloy.analysis.inventory import SourceRecord
    from alloy.analysis.recommend import Recommendation
    from alloy.arch.differences import CompatReport
    from alloy.lora.extract import ExtractResult
    from alloy.lora.merge import LoraMergeResult

ModelList = Sequence[str | ModelRef]
OnTensor = Callable[[str], None]

LORA_METHODS = ("cat", "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")


def check(models: ModelList | str | Path) -> CompatReport:
    """The compatibility report of ``models`` (two or more references; the first is the
    reference), or of the models of the merge config at the path ``models``, with its layout.
    Reads headers, configs and tokenizer files only."""
    from alloy.analysis.check import check as check_models
    from alloy.analysis.check import check_config

    if isinstance(models, (str, Path)):
        return check_config(models)
    return check_models(list(models))


def inventory(
    models: ModelList | str | Path,
    *,
    hash_weights: bool = True,
    labels: Sequence[str | None] = (),
) -> list[SourceRecord]:
    """One record per model (origin, declared base, parameters, dtypes, hashes, domain), for
    ``models`` or the models of the merge config at the path ``models``."""
    from alloy.analysis.inventory import inventory as make_inventory
    from alloy.config.load import load_config

    refs: list[str | ModelRef]
    if isinstance(models, (str, Path)):
        refs = list(load_config(Path(models)).all_models())
    else:
        refs = list(models)
    return make_inventory(refs, hash_weights=hash_weights, labels=list(labels))


def analyze(
    models: ModelList,
    base: str | ModelRef | None = None,
    *,
    density: float = 0.5,
    sample: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    on_tensor: OnTensor | None = None,
) -> Analysis:
    """Task-vector statistics of ``models`` against ``base`` (or of their weights, without a
    base): norms, cosines, sign conflicts at the TIES ``density``, per tensor and layer.
    ``sample`` reads that fraction of each matrix's rows; ``workers`` tensors at once."""
    from alloy.analysis.analyze import analyze as run

    return run(
        models,
        base,
        density=density,
        sample=sample,
        seed=seed,
        workers=workers,
        on_tensor=on_tensor,
    )


def recommend(
    models: ModelList,
    base: str | ModelRef | None = None,
    *,
    density: float = 0.5,
    sample: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    on_tensor: OnTensor | None = None,
) -> Recommendation:
    """Check, analyze, and recommend a merge method with its parameters and reasons (or to
    stop, or to retrain), and whether the recommended merge fits in memory (it is planned,
    from headers only); the arguments are `analyze`'s."""
    from alloy.analysis.recommend import recommend as run

    rec = run(
        models,
        base,
        density=density,
        sample=sample,
        seed=seed,
        workers=workers,
        on_tensor=on_tensor,
    )
    return rec if rec.config is None else replace(rec, memory=_memory(rec.config))


def _memory(config: dict[str, Any]) -> dict[str, Any]:
    """Whether the merge of ``config`` fits in memory: planned here, from headers only."""
    from alloy.analysis.memory import memory_fit
    from alloy.config.load import load_config
    from alloy.plan.estimate import estimate_memory
    from alloy.plan.models import open_models_of
    from alloy.plan.planner import build_plan

    cfg = load_config(config)
    with open_models_of(cfg) as models:
        the_plan = build_plan(cfg, models, allow_crimes=True)
    return memory_fit(estimate_memory(the_plan), the_plan.method.name)


def _check_svd(rank: int | None, device: str) -> None:
    check_count(rank, "rank", "--rank")
    check_device(device)


def lora_merge(
    sources: str | Path | Sequence[tuple[str | Path, float]],
    out: str | Path,
    *,
    method: str | None = None,
    density: float | None = None,
    lambda_: float | None = None,
    rank: int | None = None,
    energy: float | None = None,
    randomized: bool = False,
    device: str = "cpu",
    seed: int = 0,
    dtype: str | None = None,
    force: bool = False,
    allow_different_bases: bool = False,
) -> LoraMergeResult:
    """Merge LoRA adapters into the PEFT adapter ``out``: ``sources`` is a merge config (the
    schema of `merge`, models being adapters) or ``[(adapter, weight), ...]`` merged with
    ``method`` (default ties), ``density`` and ``lambda_``. ``cat`` is exact; the others
    re-factorize each module's merged delta by truncated SVD to ``rank`` or ``energy``."""
    from alloy.lora.merge import lora_merge_config, merge_adapters

    _check_svd(rank, device)
    config: str | Path | dict[str, Any]
    if isinstance(sources, (str, Path)):
        if method is not None or density is not None or lambda_ is not None:
            raise UsageError(
                "method, density and lambda (`--method`, `--density`, `--lambda`) go in the "
                f"config file {sources}"
            )
        config = sources
    else:
        if method is not None and method not in LORA_METHODS:
            raise UsageError(
                f"method (`--method`) {method!r} cannot merge adapters: use "
                f"{', '.join(LORA_METHODS)}"
            )
        pairs = [(str(path), weight) for path, weight in sources]
        config = lora_merge_config(pairs, method or "ties", density=density, lambda_=lambda_)
    return merge_adapters(
        config,
        out,
        rank=rank,
        energy=energy,
        randomized=randomized,
        device=device,
        seed=seed,
        dtype=dtype,
        force=force,
        allow_different_bases=allow_different_bases,
    )


def lora_extract(
    model: str,
    base: str,
    out: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    randomized: bool = False,
    embeddings: bool = False,
    device: str = "cpu",
    seed: int = 0,
    dtype: str | None = None,
    force: bool = False,
) -> ExtractResult:
    """Write to ``out`` a LoRA adapter with ``base`` + adapter ≈ ``model`` (truncated SVD of
    ``model - base`` per module, to ``rank`` or ``energy``)."""
    from alloy.lora.extract import extract_lora

    _check_svd(rank, device)
    return extract_lora(
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


def sources_from_report(merged: Path) -> tuple[list[tuple[str, Path]], str | None]:
    """The source models (label, path) and the method recorded in an Alloy output's report."""
    from alloy.report.report import read_report

    if not (merged / "report.json").is_file():
        raise EvaluationError(
            f"{merged} has no report.json to take the source models from; list them after "
            "the merged model: alloy eval MERGED SOURCE..."
        )
    merge = read_report(merged)["merge"]
    return [(m["label"], Path(m["path"])) for m in merge["models"]], merge.get("method")
