"""Reading checkpoint files defensively: regular files only, JSON without surprises, and the
safetensors header validated exactly as the format requires.

The safetensors rules (as its own library enforces them, never more leniently): an 8-byte
little-endian header length, at most 100 MB, inside the file; a UTF-8 JSON object mapping each
tensor name to ``{dtype, shape, data_offsets}`` (and an optional ``__metadata__`` of strings);
shapes of non-negative integers; ``[begin, end]`` offsets that, sorted, start at 0, follow each
other without gap or overlap, span exactly ``dtype size x numel`` bytes each and end exactly at
the end of the file. Alloy is stricter in two respects: a name given twice, and a key other
than those three in an entry, are errors.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Any

import torch

from alloy.errors import CheckpointError

MAX_HEADER = 100_000_000
MAX_JSON = 200_000_000  # an index or config.json is kilobytes; refuse a hostile giant
_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def open_regular(path: Path) -> int:
    """An O_RDONLY descriptor of ``path``, which must be a regular file (links followed);
    never blocks on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}.") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise CheckpointError(
            f"{path} is {kind}, not a regular file; Alloy reads checkpoints only from regular "
            "files. Replace it with the real file."
        )
    return fd


def check_regular(path: Path) -> None:
    os.close(open_regular(path))


def read_bytes(path: Path, limit: int = MAX_JSON) -> bytes:
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise CheckpointError(f"{path} is {size} bytes, far too large for its kind.")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


class DuplicateKeyError(ValueError):
    def __init__(self, key: str, first: Any, second: Any) -> None:
        super().__init__(f"key {key!r} appears twice ({first!r} and {second!r})")
        self.key, self.first, self.second = key, first, second


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(k, out[k], v)
        out[k] = v
    return out


def loads_strict(
    data: bytes | str,
    where: Path,
    *,
    constants: bool = False,
    unique: bool = True,
    what: str = "JSON",
) -> Any:
    """JSON with bad UTF-8, pathological nesting, (if ``unique``) duplicate keys and (unless
    ``constants``) NaN/Infinity literals refused; ``what`` names the content in the message."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        hook = None if constants else _no_constant
        pairs = _no_duplicates if unique else None
        return json.loads(text, object_pairs_hook=pairs, parse_constant=hook)
    except DuplicateKeyError as e:
        why = f"{e}; the file is ambiguous"
    except UnicodeDecodeError as e:
        why = f"not UTF-8 ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        why = f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
    except (RecursionError, ValueError) as e:
        why = f"unreadable ({e or 'nested too deeply'})"
    raise CheckpointError(f"{where} has a corrupt {what}: {why}. Download or write it again.")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json_object(path: Path, *, constants: bool = False, unique: bool = True) -> dict[str, Any]:
    data = loads_strict(read_bytes(path), path, constants=constants, unique=unique)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(data).__name__}.")
    return data


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def parse_header(
    path: Path, fd: int, dtypes: dict[str, torch.dtype]
) -> tuple[dict[str, str], dict[str, tuple[torch.dtype, tuple[int, ...], int]]]:
    """(metadata, {name: (dtype, shape, absolute byte offset)}) of the safetensors file ``fd``."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, 8, 0)
    if len(head) < 8:
        raise CheckpointError(
            f"{path} is not a safetensors file: it has {size} bytes, fewer than the 8-byte "
            "header length. The file is truncated; download it again."
        )
    (n,) = struct.unpack("<Q", head)
    if n > size - 8 or n > MAX_HEADER:
        raise CheckpointError(
            f"{path} is truncated or not a safetensors file: its header claims {n} bytes but "
            f"the file has {size}. Download it again."
        )
    raw = os.pread(fd, n, 8)
    if len(raw) < n:
        raise CheckpointError(f"{path}: the header ends early; the file is truncated.")
    header = loads_strict(raw, path, what="safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path}: the safetensors header must be a JSON object, not "
            f"{type(header).__name__}; the file is corrupt. Download it again."
        )
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: __metadata__ must map names to strings.")
    entries = {name: _entry(path, name, v, dtypes) for name, v in header.items()}
    _check_layout(path, entries, size - 8 - n)
    return meta, {k: (d, s, 8 + n + b) for k, (d, s, b, _) in entries.items()}


def _entry(
    path: Path, name: str, meta: Any, dtypes: dict[str, torch.dtype]
) -> tuple[torch.dtype, tuple[int, ...], int, int]:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {name!r} {why}; the file is corrupt.")

    if not isinstance(meta, dict):
        raise bad("has a header entry that is not an object")
    missing = {"dtype", "shape", "data_offsets"} - set(meta)
    if missing:
        raise bad(f"has no {', '.join(sorted(missing))} in its header entry")
    extra = set(meta) - {"dtype", "shape", "data_offsets"}
    if extra:
        raise bad(f"has unknown keys in its header entry ({', '.join(sorted(map(str, extra)))})")
    code, shape, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
    if not isinstance(code, str) or code not in dtypes:
        raise bad(f"has the dtype {code!r}, which Alloy does not read ({', '.join(dtypes)})")
    if not isinstance(shape, list) or not all(_nonneg_int(d) for d in shape):
        raise bad(f"has the shape {shape!r}; a shape is a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_nonneg_int(x) for x in offsets)
        or offsets[1] < offsets[0]
    ):
        raise bad(f"has the data_offsets {offsets!r}; they are [begin, end] with 0 <= begin <= end")
    dtype = dtypes[code]
    nbytes = math.prod(shape) * dtype.itemsize
    begin, end = offsets
    if end - begin != nbytes:
        raise bad(f"({code} {shape}) should take {nbytes} bytes but its offsets span {end - begin}")
    return dtype, tuple(shape), begin, end


def _check_layout(
    path: Path, entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]], data_len: int
) -> None:
    """Offsets sorted must tile ``[0, data_len)`` exactly: no gap, no overlap, nothing past."""
    pos, prev = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin != pos:
            what = "overlaps" if begin < pos else "leaves a gap after"
            after = f"tensor {prev!r}" if prev is not None else "the header"
            raise CheckpointError(
                f"{path}: tensor {name!r} starts at data byte {begin}, which {what} {after} "
                f"(ending at {pos}); the file is corrupt. Download it again."
            )
        pos, prev = end, name
    if pos != data_len:
        if pos > data_len:
            raise CheckpointError(
                f"{path} is truncated: its tensors need {pos} data bytes but the file has "
                f"{data_len}. Download it again."
            )
        raise CheckpointError(
            f"{path}: {data_len - pos} bytes after the last tensor belong to none; the file "
            "is corrupt or not a safetensors file. Download it again."
        )


def check_shard_name(root: Path, fname: Any, index_path: Path, tensor: str) -> Path:
    """``root / fname`` for a shard named in an index: a relative path inside ``root``."""
    if not isinstance(fname, str) or not fname:
        raise CheckpointError(
            f"{index_path}: weight_map maps tensor {tensor!r} to {fname!r}; shard names are "
            "non-empty strings (file names in the model directory)."
        )
    parts = fname.replace("\\", "/").split("/")
    if os.path.isabs(fname) or ".." in parts or "\0" in fname:
        raise CheckpointError(
            f"{index_path}: weight_map maps tensor {tensor!r} to {fname!r}, which leaves the "
            "model directory; shards must be files inside it."
        )
    return root / fname
