"""Resuming an interrupted merge (`alloy merge --resume`, docs/safety.md).

Every merge records, in its temporary directory, a manifest (`MANIFEST`): what decides the bytes
of its shards (its `key`: Alloy's and torch's versions, the config's and the plan's digests, the
options that change bytes, each input file's size, modification time and header digest) and,
as each shard is closed and synced, its size and digest (XXH3-128: about 10 GB/s, where SHA-256
cost 8 s of a 7B merge's CPU; it guards against a shard changed or damaged while the run was
stopped, not against an adversary, who could as well edit the manifest). A run killed or interrupted leaves
the directory; ``--resume`` compares the key with the new run's, refuses with every difference,
re-verifies each complete shard (size and digest: the shard is read once, far less than merging
it again, which reads it from two or more inputs), removes everything else and merges only the
shards that are missing. Shards are independent files and a tensor's bytes depend only on the
key and its name (seeds are per tensor, `alloy.plan.seeds`), so the result is the same bytes as
an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from alloy.errors import OutputError

MANIFEST = ".alloy-resume.json"
FORMAT = 2  # 2: shard digests are XXH3-128 (1: SHA-256)
PAUSE_ENV = "ALLOY_TEST_PAUSE"  # tests: stop the process (SIGSTOP) at a named point
_EDGE = 1 << 20  # bytes hashed at each end of a file that is not safetensors
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json")

# what each part of the key is called in a refusal
_KEY_NAMES = {
    "format": "the manifest's format",
    "alloy": "Alloy's version",
    "torch": "torch's version",
    "config": "the merge config",
    "plan": "the merge plan (the models' tensors, --lora-base, --strict, --allow-crimes)",
}
_OPTION_NAMES = {
    "out_shard_size": "--out-shard-size (bytes)",
    "device": "--device",
    "seed": "--random-seed",
    "kernels": "the CPU kernels (ALLOY_KERNELS, numba)",
}


def pause_point(name: str) -> None:
    """Tests only: stop this process (SIGSTOP) when ``ALLOY_TEST_PAUSE`` is ``name``, so that a
    test can kill it at exactly that point. The signal goes to the calling thread, which takes
    it on its way out of the call and so stops there (sent to the process, another thread may
    take it while this one goes on writing)."""
    if os.environ.get(PAUSE_ENV) == name:
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def _digest_file(path: Path, start: int = 0, length: int | None = None) -> str:
    """XXH3-128 (hex) of ``length`` bytes of ``path`` from ``start`` (to its end: None)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            block = f.read(1 << 22 if left is None else min(1 << 22, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def _head_digest(path: Path, size: int) -> str:
    """A safetensors file's header (every tensor's name, dtype, shape and offsets); for any
    other file its first and last MiB (a zip-based ``.bin`` ends with its records' CRC-32s)."""
    if path.suffix == ".safetensors" and size >= 8:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        return _digest_file(path, 0, 8 + min(n, size - 8))
    if size <= 2 * _EDGE:
        return _digest_file(path)
    return _digest_file(path, 0, _EDGE) + _digest_file(path, size - _EDGE)


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.suffix in _WEIGHTS and not p.name.startswith(".")]


def fingerprint_inputs(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Each input file (weights and JSON of every input directory, links followed): its size,
    modification time and `_head_digest`."""
    out: dict[str, dict[str, Any]] = {}
    for root in paths:
        for p in _files_of(Path(os.path.abspath(root))):
            try:
                st = os.stat(p)
                if not stat.S_ISREG(st.st_mode):
                    continue
                out[str(p)] = {
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "head": _head_digest(p, st.st_size),
                }
            except OSError as e:
                out[str(p)] = {"error": e.strerror or str(e)}
    return dict(sorted(out.items()))


def digest(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (keys sorted; other objects by `str`)."""
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class Manifest:
    """The manifest of one temporary directory: the run's key and its complete shards."""

    directory: Path
    key: dict[str, Any]
    complete: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self) -> None:
        """Write the manifest atomically and durably (a temporary file, fsync, rename)."""
        path = self.directory / MANIFEST
        part = self.directory / (MANIFEST + ".part")
        data = {"format": FORMAT, "key": self.key, "complete": self.complete}
        with open(part, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def add(self, name: str, size: int, digest: str) -> None:
        """Record the closed, synced shard ``name`` (``digest``: XXH3-128, hex)."""
        self.complete[name] = {"size": size, "xxh3_128": digest}
        self.save()


def has_manifest(directory: Path) -> bool:
    return os.path.isfile(directory / MANIFEST) and not os.path.islink(directory / MANIFEST)


def read_manifest(directory: Path, out: Path) -> Manifest:
    """The manifest of an interrupted run's ``directory``; an `OutputError` if it is unreadable."""
    path = directory / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read(50_000_000))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        key, complete = data["key"], data["complete"]
        if not isinstance(key, dict) or not isinstance(complete, dict):
            raise ValueError("'key' and 'complete' must be objects")
        key["format"] = data.get("format")
    except (OSError, ValueError, KeyError) as e:
        raise OutputError(
            f"cannot resume {out}: the manifest {path} of the interrupted run is unreadable "
            f"({e}). Run without --resume to start over (that removes {directory.name})."
        ) from e
    return Manifest(directory, key, complete)


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between an interrupted run's key and this run's, for people."""
    found = [
        f"{label} differs ({old.get(k)!r} then, {new.get(k)!r} now)"
        if k in ("format", "alloy", "torch")
        else f"{label} changed"
        for k, label in _KEY_NAMES.items()
        if old.get(k) != new.get(k)
    ]
    was, now = old.get("options") or {}, new.get("options") or {}
    for k, label in _OPTION_NAMES.items():
        if was.get(k) != now.get(k):
            found.append(f"{label} was {was.get(k)!r}, now {now.get(k)!r}")
    found += _input_differences(old.get("inputs") or {}, new.get("inputs") or {})
    return found


def _input_differences(was: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    found = []
    for path in sorted(set(was) | set(now)):
        a, b = was.get(path), now.get(path)
        if a == b:
            continue
        if a is None or b is None:
            found.append(f"the input {path} {'is new' if a is None else 'is gone'}")
            continue
        what = [k for k in ("size", "mtime_ns", "head", "error") if a.get(k) != b.get(k)]
        names = {"mtime_ns": "modification time", "head": "header"}
        found.append(f"the input {path} changed ({', '.join(names.get(k, k) for k in what)})")
    return found


def _verified(directory: Path, name: str, entry: Mapping[str, Any]) -> bool:
    """Whether the recorded shard ``name`` is still what was written: a regular file with one
    link, of the recorded size and XXH3-128."""
    path = directory / name
    try:
        st = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != entry.get("size"):
            return False
        return _digest_file(path) == entry.get("xxh3_128")
    except OSError:
        return False


def _clear(directory: Path, keep: set[str]) -> None:
    """Remove everything in ``directory`` but ``keep`` (never following a link)."""
    for e in os.scandir(directory):
        if e.name in keep:
            continue
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path)
        else:
            os.unlink(e.path)


def start(directory: Path, key: dict[str, Any]) -> Manifest:
    """The manifest of a new run into ``directory`` (written before any shard)."""
    manifest = Manifest(directory, dict(key, format=FORMAT))
    manifest.save()
    return manifest


def resume(
    directory: Path, key: dict[str, Any], shards: list[str], out: Path
) -> tuple[Manifest, list[str]]:
    """Continue the interrupted run in ``directory``: refuse (an `OutputError` with every
    difference) unless its key equals ``key``; keep the recorded shards of ``shards`` that
    verify, remove everything else. (The manifest of what is kept, the recorded shards that
    failed verification and will be merged again.)"""
    old = read_manifest(directory, out)
    found = differences(old.key, dict(key, format=FORMAT))
    if found:
        raise OutputError(
            f"cannot resume {out} from {directory.name}: " + "; ".join(found) + ". Undo the "
            f"change and run with --resume again, or run without --resume to start over (that "
            f"removes {directory.name})."
        )
    kept = {
        n: dict(e)
        for n, e in old.complete.items()
        if n in shards and isinstance(e, dict) and _verified(directory, n, e)
    }
    _clear(directory, {MANIFEST, *kept})
    manifest = Manifest(directory, old.key, kept)
    manifest.save()
    return manifest, sorted(n for n in old.complete if n in shards and n not in kept)


__all__ = [
    "MANIFEST",
    "PAUSE_ENV",
    "Manifest",
    "differences",
    "digest",
    "fingerprint_inputs",
    "has_manifest",
    "pause_point",
    "read_manifest",
    "resume",
    "start",
]
