"""Independent jobs of the demo (training a specialist, measuring a model) on worker processes.

Each job runs single-threaded with its own seeds, so its result is the same in a worker or in
this process, whatever the number of workers: parallelism changes the wall time only. Workers
are spawned (not forked: torch's thread pools do not survive a fork).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Two workers where there are two cores or more (the demo's budget is 2 cores)."""
    return min(2, os.cpu_count() or 1)


def quiet() -> None:
    """Silence the libraries' progress bars and advisory warnings in demo processes."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", module=r"peft\..*")
    warnings.filterwarnings("ignore", module=r"transformers\..*")
    from alloy.evaluate.models import silence_transformers

    with contextlib.suppress(ImportError):
        silence_transformers()


def _warm_up() -> None:
    """Import the heavy libraries while the main process trains the base."""
    import torch

    torch.set_num_threads(1)
    quiet()
    import peft  # noqa: F401


class Workers:
    """A pool of ``n`` spawned processes, or this process alone when ``n`` is 1."""

    def __init__(self, n: int) -> None:
        self.n = max(1, n)
        self._pool: ProcessPoolExecutor | None = None
        if self.n > 1:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.n, mp_context=ctx, initializer=_warm_up)
            for _ in range(self.n):  # start every worker (and its imports) now
                self._pool.submit(_noop)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]``, in order, on the workers."""
        if self._pool is None:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _noop() -> None:
    return None


def measure_job(job: tuple[str, Path, Any, Any]) -> Any:
    """Measure one model on every set: ``(label, path, sets, options)``."""
    from alloy.evaluate.run import measure_model

    label, path, sets, options = job
    return measure_model(label, path, sets, options)
