"""`alloy merge --resume` after real processes were killed (slow: a process per run).

The kill points are deterministic: the run is started with ``ALLOY_TEST_PAUSE`` naming a point
(`alloy.io.resume.pause_point`), stops itself there (SIGSTOP), and the test waits for the stop
(``waitpid(WUNTRACED)``) before it sends SIGKILL, or SIGINT and SIGCONT. No sleep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from alloy.api import merge
from alloy.cli import main
from alloy.errors import OutputError
from alloy.io.resume import MANIFEST, PAUSE_ENV

from .test_resume import SHARD, contents, scene, temporaries

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"


def _start(cfg: Path, out: Path, *extra: str, pause: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    env.update(PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1")
    if pause is not None:
        env[PAUSE_ENV] = pause
    cmd = [sys.executable, "-m", "alloy", "merge", str(cfg), str(out), "--out-shard-size", SHARD]
    return subprocess.Popen([*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _stopped(proc: subprocess.Popen[bytes]) -> None:
    """Until ``proc`` stopped itself at its pause point."""
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        assert proc.stderr is not None
        raise AssertionError(
            f"the run ended ({status}) before its pause point: {proc.stderr.read()!r}"
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out.decode(), err.decode()


def _complete(tmp: Path) -> list[str]:
    return sorted(json.loads((tmp / MANIFEST).read_text())["complete"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The scene's config and the files of its uninterrupted merge (into a directory "out")."""
    root = tmp_path_factory.mktemp("kill")
    cfg = scene(root)
    merge(cfg, root / "clean" / "out", out_shard_size=SHARD)
    return cfg, contents(root / "clean" / "out")


def _shards(files: dict[str, bytes]) -> list[str]:
    return [n for n in files if n.endswith(".safetensors")]


@pytest.mark.parametrize(
    ("point", "complete"),
    [("shard-done:1", 1), ("mid-shard:3", 2), ("before-swap", None)],
    ids=["after-one-shard", "mid-shard", "before-the-swap"],
)
def test_sigkill_then_resume_gives_the_bytes_of_a_clean_run(
    tmp_path: Path,
    reference: tuple[Path, dict[str, bytes]],
    point: str,
    complete: int | None,
) -> None:
    cfg, clean = reference
    shards = _shards(clean)
    complete = len(shards) if complete is None else complete
    out = tmp_path / "out"
    proc = _start(cfg, out, pause=point)
    _stopped(proc)
    (tmp,) = temporaries(tmp_path)
    assert _complete(tmp) == shards[:complete]
    if point.startswith("mid-shard"):  # the third shard is on disk, partly written
        partial = tmp / shards[2]
        assert 0 < partial.stat().st_size < len(clean[shards[2]])
    _kill(proc)
    assert temporaries(tmp_path) == [tmp] and not out.exists()
    code, stdout, err = _finish(_start(cfg, out, "--resume"))
    assert code == 0, err
    assert f"resumed: {complete} of {len(shards)} shards were kept" in stdout
    assert contents(out) == clean
    assert temporaries(tmp_path) == [] and not (tmp_path / ".out.alloy-lock").exists()


def test_ctrl_c_keeps_the_shards_and_says_how_to_resume(
    tmp_path: Path, reference: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, clean = reference
    shards = _shards(clean)
    out = tmp_path / "out"
    proc = _start(cfg, out, pause="shard-done:2")
    _stopped(proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    code, _, err = _finish(proc)
    assert code == 130 and "Traceback" not in err, err
    (tmp,) = temporaries(tmp_path)
    kept = _complete(tmp)  # the writer may finish a shard more before Ctrl-C is acted on
    assert len(kept) >= 2 and kept == shards[: len(kept)]
    assert f"{len(kept)} of {len(shards)} shards are complete in {tmp}" in err
    assert "--resume" in err and not (tmp_path / ".out.alloy-lock").exists() and not out.exists()
    code, _, err = _finish(_start(cfg, out, "--resume"))
    assert code == 0, err
    assert contents(out) == clean


def test_dare_resumed_after_sigkill_gives_the_same_bytes(tmp_path: Path) -> None:
    cfg = scene(tmp_path, "dare_ties")
    merge(cfg, tmp_path / "clean" / "out", out_shard_size=SHARD, random_seed=3)
    clean = contents(tmp_path / "clean" / "out")
    out = tmp_path / "out"
    proc = _start(cfg, out, "--random-seed", "3", pause="mid-shard:2")
    _stopped(proc)
    _kill(proc)
    code, _, err = _finish(_start(cfg, out, "--random-seed", "3", "--resume"))
    assert code == 0, err
    assert contents(out) == clean


def test_a_refused_resume_exits_1_and_keeps_the_temporary(
    tmp_path: Path, reference: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, clean = reference
    out = tmp_path / "out"
    proc = _start(cfg, out, pause="shard-done:2")
    _stopped(proc)
    with pytest.raises(OutputError, match="another Alloy run is writing"):  # alive: its lock
        merge(cfg, out, out_shard_size=SHARD, resume=True)
    _kill(proc)
    (tmp,) = temporaries(tmp_path)
    # the last --out-shard-size given wins (click), so this run asks for 30KB
    code, _, err = _finish(_start(cfg, out, "--out-shard-size", "30KB", "--resume"))
    assert code == 1 and "Traceback" not in err
    assert "error: cannot resume" in err and "--out-shard-size (bytes) was 40000, now 30000" in err
    assert temporaries(tmp_path) == [tmp] and _complete(tmp) == _shards(clean)[:2]


def test_merge_help_documents_resume() -> None:
    result = CliRunner().invoke(main, ["merge", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--resume" in text and "from the complete shards" in text
