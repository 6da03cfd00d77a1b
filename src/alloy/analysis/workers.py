"""Where `alloy analyze` computes: on ``workers`` threads of the calling process.

Each job reads one tensor from every checkpoint (positioned reads: no shared file offsets,
and the interpreter lock is released while reading) and computes its sums in the fused CPU
kernels, which release the lock too, so threads run in parallel. At most ``workers`` tensors
are in flight, the largest first, and a large one only with little else (`IN_FLIGHT_BYTES` of
inputs beyond the first), so memory stays bounded by the largest tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch

from alloy.analysis.stats import Sums, task_vector_sums, weight_sums
from alloy.errors import CheckpointError
from alloy.io.gguf import GGUFSource
from alloy.io.lora.source import LoraSource
from alloy.io.sources import SafetensorsCheckpoint, TorchBinCheckpoint

IN_FLIGHT_BYTES = 512 * 1024**2  # input bytes of the tensors in flight, beyond the first

Weights = SafetensorsCheckpoint | TorchBinCheckpoint | GGUFSource | LoraSource


@dataclass(frozen=True)
class Setup:
    """What every job needs besides its tensor: labels, base or not, the TIES density."""

    labels: tuple[str, ...]
    has_base: bool
    density: float


@dataclass(frozen=True)
class Job:
    name: str
    names: tuple[str, ...]  # the tensor's name in each checkpoint
    rows: tuple[tuple[int, int], ...] | None  # row ranges to read (None: all)
    rows_total: int
    input_bytes: int


def compute(job: Job, weights: Sequence[Weights], setup: Setup) -> Sums:
    """Read one tensor from every checkpoint and return its sums (scaled up if sampled)."""
    tensors = []
    for w, name in zip(weights, job.names):
        if job.rows is None:
            tensors.append(w.get(name))
        else:
            tensors.append(torch.cat([w.get(name, r) for r in job.rows]))
    try:
        if setup.has_base:
            sums = task_vector_sums(tensors[-1], tensors[:-1], setup.density, setup.labels)
        else:
            sums = weight_sums(tensors, setup.labels)
    except CheckpointError as e:
        raise CheckpointError(f"tensor {job.name}: {e}") from e
    if job.rows is not None:
        sums = sums.scaled(job.rows_total / sum(b - a for a, b in job.rows))
    return sums


def thread_safe(weights: Sequence[Weights]) -> bool:
    """Whether jobs may read ``weights`` from several threads: `.bin` checkpoints keep one
    loaded shard, which threads would swap under each other."""
    return not any(isinstance(w, TorchBinCheckpoint) for w in weights)


def run(
    jobs: Sequence[Job],
    setup: Setup,
    weights: Sequence[Weights],
    workers: int,
    on_done: Callable[[Job], None] | None = None,
) -> list[Sums]:
    """The sums of every job, in order, computed on ``workers`` threads."""
    if workers <= 1 or len(jobs) <= 1 or not thread_safe(weights):
        results = []
        for job in jobs:
            results.append(compute(job, weights, setup))
            if on_done is not None:
                on_done(job)
        return results
    out: dict[int, Sums] = {}
    # largest first, each started as soon as it fits: no thread waits at the end on one big
    # tensor, and two big tensors are never in memory at once
    pending = sorted(range(len(jobs)), key=lambda i: -jobs[i].input_bytes)
    with ThreadPoolExecutor(workers, thread_name_prefix="alloy-analyze") as pool:
        running: dict[Future[Sums], int] = {}
        try:
            while pending or running:
                in_flight = sum(jobs[i].input_bytes for i in running.values())
                fits = [
                    i
                    for i in pending
                    if not running or in_flight + jobs[i].input_bytes <= IN_FLIGHT_BYTES
                ]
                if fits and len(running) < workers:
                    pending.remove(fits[0])
                    running[pool.submit(compute, jobs[fits[0]], weights, setup)] = fits[0]
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    i = running.pop(f)
                    out[i] = f.result()
                    if on_done is not None:
                        on_done(jobs[i])
        except BaseException:
            for f in running:
                f.cancel()
            raise
    return [out[i] for i in range(len(jobs))]
