"""The tensor loop every streaming program shares: read the next item while this one is used.

`alloy.plan.executor.Executor` (a merge), `alloy.lora.extract` (an adapter from a fine-tune)
and `alloy.lora.merge` (adapters into one) each walk their tensors in a fixed order; reading
runs on one background thread, one item ahead, so the disk and the computation overlap and
memory holds at most two items' inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


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
