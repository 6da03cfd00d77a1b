"""The shared tensor loop: items in order with what was read for them, errors where they occur."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from alloy.plan.loop import read_ahead, read_prepare_ahead


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


def _wait_for(cond: Callable[[], bool], tries: int = 2000) -> None:
    for _ in range(tries):
        if cond():
            return
        threading.Event().wait(0.001)


def test_two_stages_run_on_two_other_threads_and_keep_the_order() -> None:
    threads: dict[str, set[str]] = {"read": set(), "prepare": set()}

    def read(i: int) -> int:
        threads["read"].add(threading.current_thread().name)
        return i * i

    def prepare(i: int, r: int) -> tuple[int, int]:
        threads["prepare"].add(threading.current_thread().name)
        return (i, r + 1)

    got = list(read_prepare_ahead([3, 1, 2], read, prepare))
    assert got == [(3, (3, 10)), (1, (1, 2)), (2, (2, 5))]
    me = threading.current_thread().name
    assert threads["read"].isdisjoint(threads["prepare"])
    assert me not in threads["read"] | threads["prepare"]
    assert list(read_prepare_ahead([], read, prepare)) == []


def test_while_the_caller_holds_an_item_the_next_is_prepared_and_the_one_after_read() -> None:
    read_started: list[int] = []
    prepared: list[int] = []
    release = threading.Event()

    def prepare(i: int, r: int) -> int:
        if i == 1:
            release.wait(5)  # held in its passes until the check below
        prepared.append(i)
        return r

    pairs = read_prepare_ahead([0, 1, 2, 3], lambda i: read_started.append(i) or i, prepare)
    item, _ = next(pairs)
    _wait_for(lambda: len(read_started) == 3)
    # three items in flight at most: the caller's (0), the one prepared (1), the one read (2)
    assert item == 0 and read_started == [0, 1, 2] and prepared == [0]
    release.set()
    assert [i for i, _ in pairs] == [1, 2, 3]


@pytest.mark.parametrize("stage", ["read", "prepare"])
def test_an_error_of_either_stage_is_raised_when_its_item_is_reached(stage: str) -> None:
    def read(i: int) -> int:
        if stage == "read" and i == 2:
            raise KeyError(f"tensor {i}")
        return i

    def prepare(i: int, r: int) -> int:
        if stage == "prepare" and i == 2:
            raise ValueError(f"passes of {i}")
        return r

    got = []
    with pytest.raises((KeyError, ValueError), match="2"):
        for item, value in read_prepare_ahead([0, 1, 2, 3], read, prepare):
            got.append((item, value))
    assert got == [(0, 0), (1, 1)]
