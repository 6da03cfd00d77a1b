"""Races and interruptions, in process: a lock per OUT, a final rename that never replaces a
directory that appeared or changed meanwhile, and an interrupted --force that keeps the old
output byte for byte."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

import alloy
from alloy.errors import OutputError
from alloy.io import output
from alloy.io.output import MARKER, commit_output, discard, prepare_output
from alloy.plan.executor import Executor

from .harness import Scene, run_cli, snapshot


def _siblings(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".alloy-" in p.name)


def test_second_run_into_one_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tmp = prepare_output(out, False, [])
    with pytest.raises(OutputError, match="another Alloy run is writing"):
        prepare_output(out, False, [])
    (tmp / "f").write_text("x")
    commit_output(tmp, out)
    assert (out / "f").read_text() == "x" and (out / MARKER).is_file()
    assert _siblings(tmp_path) == []  # no lock, no temporary left


def test_out_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tmp = prepare_output(out, False, [])
    (tmp / "merged").write_text("new")
    out.mkdir()  # another process creates OUT while the merge runs
    (out / "theirs.txt").write_text("theirs")
    with pytest.raises(OutputError, match="appeared while the run was writing"):
        commit_output(tmp, out)
    discard(tmp)
    assert sorted(os.listdir(out)) == ["theirs.txt"]
    assert (out / "theirs.txt").read_text() == "theirs"
    assert _siblings(tmp_path) == []


def test_empty_out_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tmp = prepare_output(out, False, [])
    out.mkdir()
    with pytest.raises(OutputError, match="appeared"):
        commit_output(tmp, out)
    discard(tmp)
    assert out.is_dir() and os.listdir(out) == []


def test_out_replaced_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    s = Scene(tmp_path)
    s.alloy_output()
    tmp = prepare_output(s.out, True, [s.a, s.b])
    os.rename(s.out, tmp_path / "moved")
    s.out.mkdir()
    (s.out / "theirs.txt").write_text("theirs")
    with pytest.raises(OutputError, match="replaced or removed by someone else"):
        commit_output(tmp, s.out)
    discard(tmp)
    assert os.listdir(s.out) == ["theirs.txt"]
    assert (tmp_path / "moved" / "model.safetensors").is_file()


def test_files_added_to_out_meanwhile_are_kept(tmp_path: Path) -> None:
    """An empty OUT validated at the start gets a file meanwhile: the commit refuses."""
    out = tmp_path / "out"
    out.mkdir()
    tmp = prepare_output(out, False, [])
    (tmp / "merged").write_text("new")
    (out / "theirs.txt").write_text("theirs")
    with pytest.raises(OutputError, match="changed, replaced or removed"):
        commit_output(tmp, out)
    discard(tmp)
    assert os.listdir(out) == ["theirs.txt"]
    assert _siblings(tmp_path) == []


def test_two_merges_at_once_one_wins_one_is_refused(tmp_path: Path) -> None:
    """Two merges started together into one OUT: exactly one writes it, the other says so."""
    s = Scene(tmp_path)
    gate = threading.Barrier(2)
    real_run = Executor.run

    def slow_run(self: Executor) -> None:
        gate.wait(timeout=30)  # both runs have prepared (or been refused) before writing
        real_run(self)

    results: list[object] = []

    def one() -> None:
        try:
            results.append(alloy.merge(s.cfg, s.out))
        except OutputError as e:
            results.append(e)
            gate.wait(timeout=30)

    Executor.run = slow_run  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        Executor.run = real_run  # type: ignore[method-assign]
    errors = [r for r in results if isinstance(r, OutputError)]
    assert len(results) == 2 and len(errors) == 1, results
    assert "another Alloy run" in str(errors[0])
    assert (s.out / "model.safetensors").is_file()
    assert _siblings(tmp_path) == []


def test_interrupted_force_keeps_the_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Scene(tmp_path)
    s.alloy_output()
    before = snapshot(tmp_path)

    def interrupted(self: Executor) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Executor, "run", interrupted)
    s.write_config(s.a, s.b, method="task_arithmetic", extra=f"base_model: {s.a}\n")
    before["cfg.yml"] = snapshot(tmp_path)["cfg.yml"]
    r = run_cli(s.merge_args(None, "--force"))
    assert r.exit_code == 130 and "interrupted; nothing was written" in r.output
    assert "Traceback" not in r.output
    assert snapshot(tmp_path) == before  # the old output as it was, no temporary, no lock


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_interrupt_during_the_swap_is_delivered_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """Ctrl-C arriving during the final swap waits until the swap is done: OUT is the new
    output whole, and the lock is released."""
    out = tmp_path / "out"
    if existing:
        first = prepare_output(out, False, [])
        (first / "f").write_text("old")
        commit_output(first, out)
    tmp = prepare_output(out, True, [])
    (tmp / "f").write_text("new")
    real = output._swap_in

    def swap(tmp: Path, run: object) -> Path | None:
        os.kill(os.getpid(), signal.SIGINT)  # blocked here: delivered once the swap is done
        return real(tmp, run)  # type: ignore[arg-type]

    monkeypatch.setattr(output, "_swap_in", swap)
    with pytest.raises(KeyboardInterrupt):
        commit_output(tmp, out)
    discard(tmp)  # what a caller's cleanup does
    assert (out / "f").read_text() == "new"
    assert _siblings(tmp_path) == []
