"""Signals on a real `alloy merge` process (slow: a model big enough to take seconds).

SIGINT, SIGTERM and SIGHUP mid-merge clean up (no temporary, no lock, no OUT) and exit 128+N;
an interrupted --force leaves the old output byte for byte; after a SIGKILL the next run removes
the dead run's temporary; a SIGINT while `alloy` starts exits 130 without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import tiny_tensors, write_tiny

from .harness import snapshot

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"


def _scene(root: Path) -> tuple[Path, Path]:
    for name, seed in (("a", 0), ("b", 1)):
        write_tiny(
            root / "in" / name, seed, tensors=tiny_tensors(seed, layers=6, hidden=768, vocab=4096)
        )
    cfg = root / "cfg.yml"
    cfg.write_text(
        "merge_method: linear\nmodels:\n"
        + "".join(f"  - model: {root / 'in' / n}\n    parameters: {{weight: 0.5}}\n" for n in "ab")
    )
    return cfg, root / "out"


def _start(cfg: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "alloy", "merge", str(cfg), str(out), "-q", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".alloy-" in p.name)


def _wait_for_writing(proc: subprocess.Popen[bytes], root: Path, limit: float = 120) -> None:
    """Until the run's temporary holds a shard being written."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        for p in root.glob(".out.alloy-tmp-*"):
            if any(p.iterdir()):
                return
        time.sleep(0.005)
    raise AssertionError("the merge never started writing")


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        (signal.SIGINT, 130),
        (signal.SIGTERM, 128 + signal.SIGTERM),
        (signal.SIGHUP, 128 + signal.SIGHUP),
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_signal_mid_merge_cleans_up(tmp_path: Path, sig: int, code: int) -> None:
    cfg, out = _scene(tmp_path)
    before = snapshot(tmp_path)
    proc = _start(cfg, out)
    _wait_for_writing(proc, tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err and b"interrupted" in err
    assert snapshot(tmp_path) == before  # no OUT, no temporary, no lock; inputs unchanged


def test_interrupted_force_keeps_old_output(tmp_path: Path) -> None:
    cfg, out = _scene(tmp_path)
    first = _start(cfg, out)
    assert first.wait(timeout=300) == 0, first.communicate()
    before = snapshot(tmp_path)
    proc = _start(cfg, out, "--force")
    _wait_for_writing(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()
    assert snapshot(tmp_path) == before


def test_rerun_after_sigkill_removes_the_dead_temporary(tmp_path: Path) -> None:
    cfg, out = _scene(tmp_path)
    proc = _start(cfg, out)
    _wait_for_writing(proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert any(n.startswith(".out.alloy-tmp-") for n in _temporaries(tmp_path))
    again = _start(cfg, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()
    assert _temporaries(tmp_path) == [] and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_sigint_while_starting_exits_130_quietly(tmp_path: Path, delay: float) -> None:
    """From the first line of Alloy's code on (the interpreter's own first tens of
    milliseconds are before any of it)."""
    cfg, out = _scene(tmp_path)
    before = snapshot(tmp_path)
    proc = _start(cfg, out)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130, or killed by SIGINT, which a shell reports as 130 too: Python re-delivers SIGINT to
    # itself when a KeyboardInterrupt ends the interpreter, and now and then one does after the
    # one-line message (a race at exit not yet explained; the message and the files are checked)
    assert proc.returncode in (130, -signal.SIGINT), err.decode()
    assert b"Traceback" not in err and b"interrupted" in err
    after = snapshot(tmp_path)
    kept = sorted({k.split(os.sep)[0] for k in set(after) - set(before)})
    if kept:  # the signal came after the shard was complete: it is kept for --resume
        assert len(kept) == 1 and kept[0].startswith(".out.alloy-tmp-"), kept
        assert (tmp_path / kept[0] / ".alloy-resume.json").is_file()
        assert b"--resume" in err, err.decode()
        after = {k: v for k, v in after.items() if not k.startswith(kept[0])}
    assert after == before
    assert not out.exists()
