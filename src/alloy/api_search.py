"""The public entry point `search`: find the merge config that keeps the most of each skill."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloy.config.load import load_config
from alloy.errors import UsageError
from alloy.evaluate.models import EvalOptions
from alloy.evaluate.run import NamedFile, ProbeSpec
from alloy.search.output import to_json, write_outputs
from alloy.search.run import SearchOptions, best
from alloy.search.run import search as run_search
from alloy.search.score import OBJECTIVES
from alloy.search.space import load_space
from alloy.search.splits import load_splits
from alloy.search.study import SAMPLERS, optuna_module


@dataclass
class SearchResult:
    out_dir: Path
    best_config: dict[str, Any] | None  # the best trial's mergekit config (also best.yml)
    trials: int
    files: list[str]
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)  # the content of trials.json


def _check(options: SearchOptions) -> None:
    if options.trials < 1:
        raise UsageError("trials (--trials) must be at least 1.")
    if options.timeout is not None and options.timeout <= 0:
        raise UsageError("timeout (--timeout) must be a positive number of seconds.")
    if options.workers < 1:
        raise UsageError("workers (--workers) must be at least 1.")
    if options.top < 0:
        raise UsageError("top (--top) must be 0 or more.")
    if options.objective not in OBJECTIVES:
        raise UsageError(f"objective (--objective) must be one of {', '.join(OBJECTIVES)}.")
    if options.sampler not in SAMPLERS:
        raise UsageError(f"sampler (--sampler) must be one of {', '.join(SAMPLERS)}.")


def _baselines(paths: Sequence[str | Path]) -> list[tuple[str, dict[str, Any], str]]:
    out = []
    for p in paths:
        cfg = load_config(p)  # errors name the file, key and line
        path = Path(p)
        generic = path.stem in {"mergekit_config", "alloy_config", "config"}
        out.append((f"fixed {path.parent.name if generic else path.stem}", dict(cfg.raw), str(p)))
    return out


def search(
    config: str | Path,
    out: str | Path,
    *,
    eval_data: Sequence[NamedFile] = (),
    eval_probes: Sequence[ProbeSpec] = (),
    test_data: Sequence[NamedFile] = (),
    test_probes: Sequence[ProbeSpec] = (),
    reference: str | None = None,
    baselines: Sequence[str | Path] = (),
    options: SearchOptions | None = None,
    eval_options: EvalOptions | None = None,
    lora_base: str | None = None,
) -> SearchResult:
    """Search the ranges and choices of the YAML ``config`` (`docs/search.md`) for the merge
    that keeps the most of each skill, measured on ``eval_data`` / ``eval_probes`` (split into
    validation and test unless ``test_data`` / ``test_probes`` give the test split).

    The study is stored in ``out/study.journal`` (``options.resume`` continues it); ``out``
    receives best.yml, trials.md, trials.json, pareto.png and report.md. ``reference`` is the
    base the fine-tunes started from (default: the config's base_model); ``baselines`` are
    fixed configs measured beside the trials (YAML files)."""
    started = time.perf_counter()
    options = options or SearchOptions()
    _check(options)
    optuna_module()  # the missing extra is named before anything else runs
    space = load_space(config)
    splits = load_splits(eval_data, eval_probes, test_data, test_probes)
    fixed = _baselines(baselines)
    out = Path(out)
    state = run_search(
        space,
        splits,
        out,
        reference=reference,
        eval_options=eval_options,
        options=options,
        baselines=fixed,
        lora_base=lora_base,
    )
    files = write_outputs(state, out)
    b = best(state)
    return SearchResult(
        out_dir=out.resolve(),
        best_config=b.config if b is not None else None,
        trials=len(state.trials),
        files=files,
        seconds=time.perf_counter() - started,
        record=to_json(state),
    )
