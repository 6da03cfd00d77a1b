"""How many cores a test process may compute on."""

from __future__ import annotations

import os


def worker_cores() -> int:
    """The cores each test process may compute on: all of them, or under pytest-xdist (`make
    test` runs one worker per core) an equal share, so that the workers together never ask for
    more threads than there are cores (oversubscribed torch threads spin and slow every worker
    down: the real demo's test took 1062 s with two 2-thread workers on 2 cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (cores or 1) // max(1, workers))
