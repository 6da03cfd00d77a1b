"""The shared tensor loop: items in order with what was read for them, errors where they occur."""

from __future__ import annotations

import threading

import pytest

from alloy.plan.loop import read_ahead


def test_items_come_in_order_with_their_reads_made_on_another_thread() -> None:
    threads: set[str] = set()

    def read(i: int) -> int:
        threads.add(threading.current_thread().name)
        return i * i

    assert list(read_ahead([3, 1, 2], read)) == [(3, 9), (1, 1), (2, 4)]
    assert threads and threading.current_thread().name not in threads
    assert list(read_ahead([], read)) == []


def test_the_next_item_is_read_before_the_caller_is_done_with_this_one() -> None:
    started: list[int] = []
    pairs = read_ahead([0, 1, 2], lambda i: started.append(i) or i)
    item, _ = next(pairs)
    # while the caller holds item 0, item 1 is being read (and nothing further)
    for _ in range(1000):
        if len(started) == 2:
            break
        threading.Event().wait(0.001)
    assert item == 0 and started == [0, 1]
    pairs.close()


def test_a_read_error_is_raised_when_its_item_is_reached() -> None:
    def read(i: int) -> int:
        if i == 2:
            raise KeyError(f"tensor {i}")
        return i

    got = []
    with pytest.raises(KeyError, match="tensor 2"):
        for item, value in read_ahead([0, 1, 2, 3], read):
            got.append((item, value))
    assert got == [(0, 0), (1, 1)]
