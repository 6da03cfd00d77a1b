"""Pure shard planning and size parsing for the output checkpoint."""

from __future__ import annotations

import re
from collections.abc import Sequence

from alloy.errors import UsageError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def human(n: float) -> str:
    """A byte count for people, in decimal units (the inverse of `parse_size`)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def parse_size(text: str | int, option: str = "out_shard_size (`--out-shard-size`)") -> int:
    """``"500MB"`` -> 500_000_000, ``"2GB"``, ``"1.5GiB"``, ``"5B"`` (mergekit's billions:
    5 * 10**9), or a plain number of bytes. Anything else (``5XB``, ``0``, ``-1``, ``nanGB``)
    is a `UsageError` naming ``option``."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise UsageError(f"{option} must be a size such as 2GB, got {text!r}")
    if isinstance(text, int):
        if text <= 0:
            raise UsageError(f"{option} must be a positive number of bytes, got {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise UsageError(
            f"{option}: cannot read the size {text!r}; use a positive number of bytes or a "
            "number with a unit (500MB, 2GB, 1.5GiB)"
        )
    value = float(m.group(1))
    # mergekit's --out-shard-size takes "5B" meaning 5 billion; a bare "B" after a number
    # of at least 1e6 is plain bytes.
    if unit == "b" and value < 1e6:
        factor = 1000**3
    else:
        factor = _UNITS[unit]
    size = int(value * factor)
    if size <= 0:
        raise UsageError(f"{option} must be at least one byte, got {text!r}")
    return size


def plan_shards(sizes: Sequence[int], max_bytes: int) -> list[list[int]]:
    """Group tensors (in order) into shards of at most ``max_bytes`` each; a tensor larger
    than the limit gets a shard of its own."""
    shards: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, size in enumerate(sizes):
        if current and used + size > max_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(i)
        used += size
    if current:
        shards.append(current)
    return shards


def shard_file_names(count: int, stem: str = "model") -> list[str]:
    if count == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
