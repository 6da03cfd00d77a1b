"""Where `alloy analyze` computes: in the calling process, or in worker processes.

With several workers, each is a process that opens the checkpoints itself; only tensor names
go in and sums come out, so the interpreter lock never serializes the numpy passes, and each
worker reads the tensors it computes (positioned reads: no shared file offsets). At most
``workers + 1`` tensors are in flight, the largest first, and a large one only with little
else (`IN_FLIGHT_BYTES` of inputs), so memory stays bounded by the largest tensor.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from alloy.analysis.stats import Sums, task_vector_sums, weight_sums
from alloy.errors import CheckpointError
from alloy.io.sources import SafetensorsCheckpoint, TorchBinCheckpoint, open_weights
from alloy.lora.source import LoraSource

IN_FLIGHT_BYTES = 512 * 1024**2  # input bytes of the tensors in flight, beyond the first

Weights = SafetensorsCheckpoint | TorchBinCheckpoint | LoraSource


@dataclass(frozen=True)
class Setup:
    """What every worker needs: the checkpoints (base last, if any) and the parameters."""

    paths: tuple[str, ...]
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


# The open checkpoints of a worker process (set by _start, alive as long as the process).
_WORKER: dict[str, object] = {}


def _keep_freed_memory() -> None:
    """glibc: serve buffers up to 32 MiB from the heap and keep freed heap memory, so a
    worker reuses its pages for the next tensor instead of faulting fresh ones in (the
    working set is bounded by the tensors in flight either way)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024**2)
    libc.mallopt(m_trim_threshold, 2 * 1024**3)


def _start(setup: Setup) -> None:
    _keep_freed_memory()
    torch.set_num_threads(1)
    _WORKER["setup"] = setup
    _WORKER["weights"] = [open_weights(Path(p)) for p in setup.paths]


def _compute_in_worker(job: Job) -> Sums:
    return compute(job, _WORKER["weights"], _WORKER["setup"])  # type: ignore[arg-type]


def _context() -> multiprocessing.context.BaseContext:
    # fork starts in milliseconds with torch already imported; only safe without other threads
    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def run(
    jobs: Sequence[Job],
    setup: Setup,
    weights: Sequence[Weights],
    workers: int,
    on_done: Callable[[Job], None] | None = None,
) -> list[Sums]:
    """The sums of every job, in order; ``weights`` are the caller's open checkpoints, used
    when ``workers`` is 1."""
    results: list[Sums] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(compute(job, weights, setup))
            if on_done is not None:
                on_done(job)
        return results
    out: dict[int, Sums] = {}
    # largest first, each started as soon as it fits: no worker waits at the end on one big
    # tensor, and two big tensors are never in memory at once
    pending = sorted(range(len(jobs)), key=lambda i: -jobs[i].input_bytes)
    with ProcessPoolExecutor(
        workers, mp_context=_context(), initializer=_start, initargs=(setup,)
    ) as pool:
        running: dict[Future[Sums], int] = {}
        try:
            while pending or running:
                in_flight = sum(jobs[i].input_bytes for i in running.values())
                fits = [
                    i
                    for i in pending
                    if not running or in_flight + jobs[i].input_bytes <= IN_FLIGHT_BYTES
                ]
                if fits and len(running) <= workers:
                    pending.remove(fits[0])
                    running[pool.submit(_compute_in_worker, jobs[fits[0]])] = fits[0]
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
