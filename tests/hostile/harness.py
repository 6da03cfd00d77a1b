"""The hostile suite's harness: a scene of two tiny input models, the `alloy` CLI run in
process with a time bound, and the checks every case makes.

Each case asserts the exit code, that no traceback is printed, that the message names what it
must (a file, key or tensor), that nothing exists outside OUT that did not before, and that every
file that existed before (every input included) is byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tiny import write_tiny

from alloy.cli import main

LIMIT_S = 60  # a case that runs longer hangs


@dataclass
class Scene:
    root: Path

    def __post_init__(self) -> None:
        self.inputs = self.root / "in"
        self.a, self.b = self.inputs / "a", self.inputs / "b"
        write_tiny(self.a, 0)
        write_tiny(self.b, 1)
        self.out = self.root / "out"
        self.cfg = self.root / "cfg.yml"
        self.write_config(self.a, self.b)

    def write_config(self, *models: Path, method: str = "linear", extra: str = "") -> Path:
        lines = [f"merge_method: {method}", "models:"]
        for m in models:
            lines += [f"  - model: {m}", "    parameters: {weight: 0.5}"]
        self.cfg.write_text("\n".join(lines) + "\n" + extra)
        return self.cfg

    def merge_args(self, out: Path | str | None = None, *extra: str) -> list[str]:
        return ["merge", str(self.cfg), str(self.out if out is None else out), *extra]

    def alloy_output(self, out: Path | None = None) -> Path:
        """A finished earlier Alloy merge at ``out`` (made before the case's snapshot)."""
        out = out or self.out
        r = run_cli(self.merge_args(out, "--force"))
        assert r.exit_code == 0, r.output
        return out


@dataclass
class Case:
    """What one hostile case runs and expects."""

    args: list[str]
    code: int
    says: list[str] = field(default_factory=list)  # substrings the output must contain
    removed: list[Path] = field(default_factory=list)  # pre-existing paths it may remove
    out: Path | None = None  # the directory the command may write (default: the scene's OUT)


Setup = Callable[[Scene], Case]


class Table:
    """Cases registered by name; ``params()`` feeds one parametrized test."""

    def __init__(self) -> None:
        self.cases: dict[str, Setup] = {}

    def __call__(self, fn: Setup) -> Setup:
        assert fn.__name__ not in self.cases, fn.__name__
        self.cases[fn.__name__] = fn
        return fn

    def params(self) -> list[Any]:
        return [pytest.param(fn, id=name) for name, fn in self.cases.items()]


def _digest(path: str, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "link:" + os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if not stat.S_ISREG(st.st_mode):
        return f"special:{stat.S_IFMT(st.st_mode)}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "file:" + h.hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (links not followed) -> its kind and content hash."""
    out: dict[str, str] = {}
    for here, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = os.path.join(here, name)
            out[os.path.relpath(p, root)] = _digest(p, os.lstat(p))
    return out


@contextmanager
def time_bound(seconds: int = LIMIT_S) -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"the command ran past {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(args: list[str]) -> Result:
    with time_bound():
        return CliRunner().invoke(main, args, catch_exceptions=True)


def _under(rel: str, prefix: str | None) -> bool:
    return prefix is not None and (rel == prefix or rel.startswith(prefix + os.sep))


def check(scene: Scene, case: Case, before: dict[str, str], result: Result) -> None:
    """The checks every case makes (see the module docstring)."""
    text = result.output
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"traceback: {type(exc).__name__}: {exc}\n{text}"
    )
    assert "Traceback" not in text, text
    assert result.exit_code == case.code, f"exit {result.exit_code}, wanted {case.code}:\n{text}"
    for s in case.says:
        assert s in text, f"the message does not name {s!r}:\n{text}"
    after = snapshot(scene.root)
    out = case.out or scene.out
    out_rel = os.path.relpath(out, scene.root) if case.code == 0 else None
    removed = {os.path.relpath(p, scene.root) for p in case.removed}
    new = [p for p in after if p not in before and not _under(p, out_rel)]
    assert not new, f"created outside OUT: {new}"
    for rel, digest in before.items():
        if _under(rel, out_rel) or any(_under(rel, r) for r in removed):
            continue
        assert after.get(rel) == digest, f"{rel} changed or vanished: {after.get(rel)}"
    for r in removed:
        assert r not in after, f"{r} should have been removed"


def run_case(scene: Scene, setup: Setup) -> Result:
    case = setup(scene)
    before = snapshot(scene.root)
    result = run_cli(case.args)
    check(scene, case, before, result)
    return result


def safetensors_bytes(header: Any, data: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file from a raw header (any JSON value, or raw bytes) and data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    return n.to_bytes(8, "little") + raw + data
