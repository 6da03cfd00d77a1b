"""`alloy analyze`: task-vector statistics of fine-tunes of one base, streamed tensor by tensor.

The models are checked first (`alloy.arch.compat`: the tensors must line up; architecture
crimes are allowed and noted). Then every floating-point tensor of the reference model (the
base, or the first model) is read from each model, its sums computed (`alloy.analysis.stats`)
and dropped: memory holds the tensors in flight, never a model. ``workers`` threads read and
compute, each on its own tensor (`alloy.analysis.workers`).

``sample``: a fraction of each matrix's rows, in blocks of `SAMPLE_BLOCK` rows chosen by a
generator seeded from (seed, tensor name); the sums are scaled up by rows / rows read. Vectors
(norms, biases) are always read whole.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alloy.analysis.inventory import parse_refs
from alloy.analysis.stats import Sums, pairs
from alloy.analysis.workers import Job, Setup, run
from alloy.arch.compat import check_models, resolve_tensor
from alloy.arch.differences import CompatReport
from alloy.arch.infer import is_output_embedding, split_layer_name
from alloy.arch.kinds import kinds, module_kind
from alloy.config.schema import ModelRef
from alloy.devices import check_count
from alloy.errors import IncompatibleModelsError, UsageError
from alloy.plan.models import InputModel, close_all, open_all
from alloy.plan.seeds import tensor_seed

SAMPLE_BLOCK = 8  # rows per sampled block
PRE, POST, OTHER = "pre", "post", "other"


@dataclass
class TensorStats:
    name: str
    group: int | str  # layer index of the main stack, or PRE / POST / OTHER
    kind: str
    shape: tuple[int, ...]
    rows_read: int | None  # None: the whole tensor
    sums: Sums


@dataclass
class Analysis:
    """The statistics of one analysis: per tensor, per layer, per module kind, in total."""

    models: list[str]
    base: str | None
    density: float
    sample: float | None
    seed: int
    tensors: list[TensorStats]
    compat: CompatReport
    seconds: float = 0.0
    groups: dict[int | str, Sums] = field(default_factory=dict)
    kinds: dict[str, Sums] = field(default_factory=dict)
    total: Sums = field(default_factory=lambda: Sums(0))

    def __post_init__(self) -> None:
        n = len(self.models)
        self.total = Sums(n)
        layers = sorted(t.group for t in self.tensors if isinstance(t.group, int))
        order: list[int | str] = [PRE, *dict.fromkeys(layers), POST, OTHER]
        groups: dict[int | str, Sums] = {g: Sums(n) for g in order}
        by_kind = {k: Sums(n) for k in kinds()}
        for t in self.tensors:
            groups[t.group].add(t.sums)
            by_kind[t.kind].add(t.sums)
            self.total.add(t.sums)
        self.groups = {g: s for g, s in groups.items() if s.tensors}
        self.kinds = {k: s for k, s in by_kind.items() if s.tensors}

    @property
    def has_base(self) -> bool:
        return self.base is not None

    @property
    def layers(self) -> dict[int, Sums]:
        """The groups of the main layer stack, by layer index."""
        return {g: s for g, s in self.groups.items() if isinstance(g, int)}

    def metrics(self, sums: Sums) -> dict[str, Any]:
        return sums.metrics(self.has_base)

    def pair_labels(self) -> list[str]:
        return [f"{i}-{j}" for i, j in pairs(len(self.models))]

    def to_dict(self, tensors: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "models": self.models,
            "base": self.base,
            "pairs": [[i, j] for i, j in pairs(len(self.models))],
            "density": self.density,
            "sample": self.sample,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "total": self.metrics(self.total),
            "layers": {str(g): self.metrics(s) for g, s in self.groups.items()},
            "kinds": {k: self.metrics(s) for k, s in self.kinds.items()},
            "compatibility": self.compat.to_dict(allow_crimes=True),
        }
        if self.has_base:
            from alloy.analysis.distance import source_distances

            out["distance"] = source_distances(self)
        if tensors:
            out["tensors"] = [
                {
                    "name": t.name,
                    "group": t.group,
                    "kind": t.kind,
                    "shape": list(t.shape),
                    "rows_read": t.rows_read,
                    **self.metrics(t.sums),
                }
                for t in self.tensors
            ]
        return out


def sample_rows(
    name: str, shape: tuple[int, ...], fraction: float | None, seed: int
) -> list[tuple[int, int]] | None:
    """Row ranges to read for ``name`` at ``fraction`` (None: the whole tensor)."""
    if fraction is None or fraction >= 1 or len(shape) < 2:
        return None
    rows = shape[0]
    blocks = math.ceil(rows / SAMPLE_BLOCK)
    take = max(1, math.ceil(fraction * blocks))
    if take >= blocks:
        return None
    g = torch.Generator().manual_seed(tensor_seed(seed, name))
    chosen = sorted(int(b) for b in torch.randperm(blocks, generator=g)[:take])
    runs: list[tuple[int, int]] = []
    for b in chosen:
        start, end = b * SAMPLE_BLOCK, min((b + 1) * SAMPLE_BLOCK, rows)
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def _jobs(
    ref: InputModel, inputs: list[InputModel], fraction: float | None, seed: int
) -> list[Job]:
    names = list(ref.arch.names)
    for m in inputs:  # a head that another input stores (tied reference)
        names += [n for n in m.arch.names if is_output_embedding(n) and n not in ref.arch.name_set]
    out = []
    for name in dict.fromkeys(names):
        resolved = [resolve_tensor(m, name) for m in inputs]
        if any(r is None for r in resolved):
            raise IncompatibleModelsError(f"tensor {name} is missing from some models")
        info = ref.weights.info(resolve_tensor(ref, name) or name)
        if not info.dtype.is_floating_point:
            continue
        rows = sample_rows(name, info.shape, fraction, seed)
        size = sum(m.weights.info(r).nbytes for m, r in zip(inputs, resolved) if r)
        if rows is not None:
            size = size * sum(b - a for a, b in rows) // info.shape[0]
        out.append(
            Job(
                name,
                tuple(r for r in resolved if r),
                tuple(rows) if rows is not None else None,
                info.shape[0] if info.shape else 1,
                size,
            )
        )
    return out


def _group(name: str, ref: InputModel) -> int | str:
    split = split_layer_name(name)
    stack = ref.arch.main_stack
    if split is not None:
        return split[1] if stack is not None and split[0] == stack.name else OTHER
    return POST if name in ref.arch.post or is_output_embedding(name) else PRE


def check_options(density: float, sample: float | None, workers: int | None) -> None:
    """A `UsageError` naming the argument (and option) of an analysis that cannot run."""
    if not 0 < density <= 1:
        raise UsageError(f"density (`--density`) must be in (0, 1], got {density}")
    if sample is not None and not 0 < sample <= 1:
        raise UsageError(f"sample (`--sample`) must be a fraction in (0, 1], got {sample}")
    check_count(workers, "workers", "--workers")


def analyze(
    models: Sequence[str | ModelRef],
    base: str | ModelRef | None = None,
    *,
    density: float = 0.5,
    sample: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    on_tensor: Callable[[str], None] | None = None,
) -> Analysis:
    """Statistics of ``models`` relative to ``base`` (or of the weights themselves without a
    base). ``density``: the TIES density of the sign-conflict rate. ``sample``: the fraction
    of rows read (None: every entry, exact)."""
    started = time.perf_counter()
    if not models or (base is None and len(models) < 2):
        raise UsageError("give a base and at least one model, or at least two models")
    check_options(density, sample, workers)
    refs = parse_refs(list(models))
    base_ref = parse_refs([base])[0] if base is not None else None
    all_refs = [*refs, *([base_ref] if base_ref is not None else [])]
    opened = open_all(all_refs)
    try:
        inputs = [opened[r] for r in all_refs]
        labels = [str(r) for r in all_refs]
        report = check_models(inputs, labels)
        if not report.mergeable(allow_crimes=True):
            raise IncompatibleModelsError(report.error_message(True), report=report)
        ref_model = inputs[-1] if base_ref is not None else inputs[0]
        jobs = _jobs(ref_model, inputs, sample, seed)
        stats = _run(jobs, inputs, ref_model, base_ref is not None, density, workers, on_tensor)
    finally:
        close_all(opened)
    return Analysis(
        models=[str(r) for r in refs],
        base=str(base_ref) if base_ref is not None else None,
        density=density,
        sample=sample,
        seed=seed,
        tensors=stats,
        compat=report,
        seconds=time.perf_counter() - started,
    )


def _run(
    jobs: list[Job],
    inputs: list[InputModel],
    ref_model: InputModel,
    has_base: bool,
    density: float,
    workers: int | None,
    on_tensor: Callable[[str], None] | None,
) -> list[TensorStats]:
    setup = Setup(tuple(str(m.ref) for m in inputs), has_base, density)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    done = None if on_tensor is None else (lambda job: on_tensor(job.name))
    sums = run(jobs, setup, [m.weights for m in inputs], workers, done)
    shapes = {
        m: ref_model.weights.info(resolve_tensor(ref_model, m) or m).shape
        for m in (j.name for j in jobs)
    }
    return [
        TensorStats(
            job.name,
            _group(job.name, ref_model),
            module_kind(job.name),
            shapes[job.name],
            None if job.rows is None else sum(b - a for a, b in job.rows),
            s,
        )
        for job, s in zip(jobs, sums)
    ]
