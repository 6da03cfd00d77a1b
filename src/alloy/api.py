"""The public entry points: `merge` and `plan`."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alloy.analysis.inventory import SourceRecord, record, write_sources
from alloy.config.load import load_config
from alloy.config.schema import MergeConfig
from alloy.errors import AlloyError, OutputError
from alloy.io.output import commit_output, discard, prepare_output
from alloy.io.sharding import parse_size
from alloy.io.writer import ShardedSafetensorsWriter
from alloy.plan.executor import Executor
from alloy.plan.planner import MergePlan, TensorJob, build_plan
from alloy.report.card import write_configs, write_model_card, write_tokenizer

log = logging.getLogger("alloy")

ConfigLike = str | Path | Mapping[str, Any] | MergeConfig


@dataclass
class MergeResult:
    out_dir: Path
    files: list[str]
    tensors: int
    bytes_written: int
    seconds: float
    method: str
    notes: list[str] = field(default_factory=list)


def _config(config: ConfigLike) -> MergeConfig:
    return config if isinstance(config, MergeConfig) else load_config(config)


def plan(
    config: ConfigLike,
    *,
    out_shard_size: str | int = "5GB",
    strict: bool = False,
    allow_crimes: bool = False,
) -> MergePlan:
    """Plan a merge from headers only. Call ``.close()`` on the result when done."""
    return build_plan(
        _config(config),
        out_shard_size=parse_size(out_shard_size),
        strict=strict,
        allow_crimes=allow_crimes,
    )


def _check_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise AlloyError("--device cuda was asked for, but torch sees no CUDA device.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise AlloyError("--device mps was asked for, but torch sees no MPS device.")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise AlloyError(f"unknown device {device!r}: use cpu, cuda or mps.")
    return device


def merge(
    config: ConfigLike,
    out: str | Path,
    *,
    device: str = "cpu",
    out_shard_size: str | int = "5GB",
    random_seed: int | None = None,
    copy_tokenizer: bool = True,
    allow_crimes: bool = False,
    force: bool = False,
    strict: bool = False,
    progress: bool = False,
) -> MergeResult:
    """Merge the models of ``config`` (a mergekit YAML path, a mapping, or a parsed config)
    into the Hugging Face model directory ``out``."""
    started = time.perf_counter()
    device = _check_device(device)
    the_plan = plan(config, out_shard_size=out_shard_size, strict=strict, allow_crimes=allow_crimes)
    out = Path(out)
    try:
        tmp = prepare_output(out, force, [m.path for m in the_plan.models.values()])
        try:
            writer = ShardedSafetensorsWriter(tmp, the_plan.shard_layout())
            bar = _progress_bar(the_plan, progress)
            on_tensor = None
            if bar is not None:
                b = bar

                def on_tensor(job: TensorJob) -> None:
                    b.update(job.info.nbytes)
                    b.set_postfix_str(f"{b.n_tensors + 1}/{len(the_plan.jobs)} tensors")
                    b.n_tensors += 1

            try:
                Executor(
                    the_plan, writer, device=device, seed=random_seed or 0, on_tensor=on_tensor
                ).run()
            finally:
                writer.abort()
                if bar is not None:
                    bar.close()
            write_configs(the_plan, tmp, random_seed)
            if copy_tokenizer:
                write_tokenizer(the_plan, tmp)
            write_model_card(the_plan, tmp, out.name)
            write_sources(source_records(the_plan), tmp / "sources.json")
            files = sorted(p.name for p in tmp.iterdir())
            commit_output(tmp, out)
        except BaseException:
            discard(tmp)
            raise
    except OSError as e:
        raise OutputError(f"writing {out} failed: {e}. Nothing was written.") from e
    finally:
        the_plan.close()
    return MergeResult(
        out_dir=out.resolve(),
        files=files,
        tensors=len(the_plan.jobs),
        bytes_written=the_plan.bytes_to_write,
        seconds=time.perf_counter() - started,
        method=the_plan.method.name,
        notes=list(the_plan.notes),
    )


def source_records(the_plan: MergePlan) -> list[SourceRecord]:
    """The inventory of a merge's inputs from their headers (no content hash: cheap)."""
    return [
        record(the_plan.models[ref], hash_weights=False) for ref in the_plan.config.all_models()
    ]


def _progress_bar(the_plan: MergePlan, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(
        total=the_plan.bytes_to_write,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"alloy {the_plan.method.name}",
        dynamic_ncols=True,
    )
    bar.n_tensors = 0
    return bar
