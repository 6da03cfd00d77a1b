"""The tensor loop every streaming program shares: read the next item while this one is used.

`alloy.plan.executor.Executor` (a merge), `alloy.lora.extract` (an adapter from a fine-tune)
and `alloy.lora.merge` (adapters into one) each walk their tensors in a fixed order; reading
runs on one background thread, one item ahead, so the disk and the computation overlap and
memory holds at most two items' inputs. The merge adds a second stage (`read_prepare_ahead`):
one thread reads, another makes the next item's reduction passes (TIES' magnitude cuts, SLERP's
angles), the caller applies, so the disk's waits and the passes overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P")


def read_ahead(items: Sequence[T], read: Callable[[T], R]) -> Generator[tuple[T, R], None, None]:
    """``(item, read(item))`` for each of ``items``, in order. ``read`` runs on a background
    thread, one item ahead of the caller; its error is raised when its item is reached."""
    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="alloy-reader") as reader:
        ahead: Future[R] = reader.submit(read, items[0])
        for k, item in enumerate(items):
            got = ahead.result()
            if k + 1 < len(items):
                ahead = reader.submit(read, items[k + 1])
            yield item, got
            del got


def read_prepare_ahead(
    items: Sequence[T], read: Callable[[T], R], prepare: Callable[[T, R], P]
) -> Generator[tuple[T, P], None, None]:
    """``(item, prepare(item, read(item)))`` for each of ``items``, in order: ``read`` runs on
    one background thread two items ahead of the caller, ``prepare`` on another one item
    ahead, so at most three items are in memory (the caller's, the one being prepared, the one
    being read). An error of either is raised when its item is reached."""
    n = len(items)
    if not n:
        return

    def _prepare(item: T, got: Future[R]) -> P:
        return prepare(item, got.result())

    with (
        ThreadPoolExecutor(1, thread_name_prefix="alloy-reader") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="alloy-prepare") as preparer,
    ):
        reads = {j: reader.submit(read, items[j]) for j in range(min(2, n))}
        prepared: Future[P] = preparer.submit(_prepare, items[0], reads.pop(0))
        for k, item in enumerate(items):
            got = prepared.result()
            if k + 1 < n:
                prepared = preparer.submit(_prepare, items[k + 1], reads.pop(k + 1))
            if k + 2 < n:
                reads[k + 2] = reader.submit(read, items[k + 2])
            yield item, got
            del got
