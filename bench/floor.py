"""The page cache and the I/O floor of a merge, for bench/run.py.

- `drop_caches`: ``sync`` then ``echo 3 > /proc/sys/vm/drop_caches`` (root only), so that a run
  reads its inputs from the disk; `cache_control` says whether that is possible here.
- `measure_floor`: the time to read every file of each input model once, sequentially, with a
  cold cache (per model, so a method's floor sums the models it reads), and to write one file
  of the output's size (buffered writes, then fsync, as Alloy's writer does). A merge cannot
  beat read + write of its bytes; ``wall / floor`` is how close it comes.
- `process_io`: ``read_bytes`` (from storage) and ``rchar`` (through read calls, cache hits
  included) of one process, from ``/proc/PID/io``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

DROP_CACHES = Path("/proc/sys/vm/drop_caches")
CHUNK = 64 * 1024 * 1024


def cache_control() -> str | None:
    """None if the page cache can be dropped here, else why not."""
    if not DROP_CACHES.exists():
        return f"{DROP_CACHES} does not exist"
    if not os.access(DROP_CACHES, os.W_OK):
        return f"{DROP_CACHES} is not writable (not root?)"
    return None


def drop_caches() -> None:
    """Write dirty pages back, then drop the page cache, dentries and inodes."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def read_files(paths: list[Path]) -> tuple[float, int]:
    """Seconds and bytes to read every file once, in order, in 64 MiB reads."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    for path in paths:
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return time.perf_counter() - start, total


def write_file(path: Path, nbytes: int) -> float:
    """Seconds to write nbytes (incompressible) into path and fsync it; the file is removed."""
    block = os.urandom(CHUNK)
    start = time.perf_counter()
    try:
        with path.open("wb", buffering=0) as f:
            left = nbytes
            while left > 0:
                left -= f.write(block[: min(left, CHUNK)])
            os.fsync(f.fileno())
        return time.perf_counter() - start
    finally:
        path.unlink(missing_ok=True)


def model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.is_file())


@dataclass
class Floor:
    read_s: dict[str, float]  # per model, cold cache where it could be dropped
    read_bytes: dict[str, int]
    write_s: float
    write_bytes: int
    cold: bool

    def for_models(self, names: list[str]) -> float:
        """The floor of a merge reading these models and writing one output."""
        return sum(self.read_s[n] for n in names) + self.write_s


def measure_floor(models: dict[str, Path], out_dir: Path, out_bytes: int, cold: bool) -> Floor:
    read_s: dict[str, float] = {}
    read_bytes: dict[str, int] = {}
    for name, model_dir in models.items():
        if cold:
            drop_caches()
        read_s[name], read_bytes[name] = read_files(model_files(model_dir))
        print(f"  floor: read {name} ({read_bytes[name] / 1e9:.1f} GB) in {read_s[name]:.1f} s")
    if cold:
        drop_caches()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_s = write_file(out_dir / "floor-write.bin", out_bytes)
    print(f"  floor: wrote and synced {out_bytes / 1e9:.1f} GB in {write_s:.1f} s", flush=True)
    return Floor(read_s, read_bytes, write_s, out_bytes, cold)


def process_io(pid: int) -> tuple[int, int] | None:
    """(read_bytes, rchar) of a live (or not yet reaped) process; None if unreadable."""
    try:
        fields = dict(
            line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines()
        )
        return int(fields["read_bytes"]), int(fields["rchar"])
    except (OSError, KeyError, ValueError):
        return None
