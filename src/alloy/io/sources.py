"""Tensor sources: checkpoints read lazily, one tensor (or one row range) at a time.

A `TensorSource` answers ``names()``, ``info(name)`` and ``get(name, rows)``. Safetensors
tensors are read with positioned reads into fresh buffers; a tensor of 1 MiB or more is mapped
instead when its pages are in the page cache already, and read with ``O_DIRECT`` when the
inputs are larger than the memory (`alloy.io.pages`, `read_past_cache`). Either way a merge's
resident memory holds only the tensors in flight. PyTorch ``.bin`` checkpoints load with
``weights_only=True`` (never arbitrary unpickling) through a memory map that is dropped when
the reader moves to another shard.
"""

from __future__ import annotations

import errno
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from alloy.errors import CheckpointError
from alloy.io.pages import CAN_MAP, CAN_READ_DIRECT, MAP_MIN, map_cached, read_direct
from alloy.io.safefile import (
    check_regular,
    check_shard_name,
    open_regular,
    parse_header,
    read_json_object,
)

if TYPE_CHECKING:
    from alloy.io.gguf import GGUFSource

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_CODES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class TensorSource(Protocol):
    """What the planner and executor need from a checkpoint. Whoever opens a source closes
    it (the executor only reads)."""

    def names(self) -> list[str]: ...

    def info(self, name: str) -> TensorInfo: ...

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor, or rows ``[start, end)`` of its first dimension."""
        ...

    def close(self) -> None:
        """Release the files the source holds open."""
        ...


class MemorySource:
    """A source over an in-memory dict of tensors (for tests and programmatic use)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._t = tensors

    def names(self) -> list[str]:
        return list(self._t)

    def info(self, name: str) -> TensorInfo:
        t = self._t[name]
        return TensorInfo(tuple(t.shape), t.dtype)

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        t = self._t[name]
        return (t if rows is None else t[rows[0] : rows[1]]).clone()

    def close(self) -> None:
        """Nothing to release: the tensors stay the caller's."""


@dataclass(frozen=True)
class _Entry:
    info: TensorInfo
    start: int  # absolute byte offset in the file


class SafetensorsFile:
    """One ``.safetensors`` file, its header validated exactly as the format requires (see
    `alloy.io.safefile`); tensors are read with positioned reads on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = open_regular(path)
        try:
            try:
                self.metadata, entries = parse_header(path, fd, SAFETENSORS_DTYPES)
            except OSError as e:
                raise CheckpointError(f"cannot read {path}: {e.strerror or e}.") from e
        finally:
            os.close(fd)
        self._entries = {k: _Entry(TensorInfo(s, d), start) for k, (d, s, start) in entries.items()}
        self._fd: int | None = None
        self._direct_fd: int | None = None
        self._opening = threading.Lock()  # two threads may read one file side by side
        self._map_ok = CAN_MAP
        # set by `read_past_cache`: large tensors not in the page cache are read with O_DIRECT
        self.direct = False

    def names(self) -> list[str]:
        return list(self._entries)

    def info(self, name: str) -> TensorInfo:
        return self._entries[name].info

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        entry = self._entries[name]
        shape = entry.info.shape
        offset, count = entry.start, entry.info.numel
        if rows is not None:
            row = math.prod(shape[1:])
            offset += rows[0] * row * entry.info.dtype.itemsize
            count = (rows[1] - rows[0]) * row
            shape = (rows[1] - rows[0], *shape[1:])
        nbytes = count * entry.info.dtype.itemsize
        itemsize = entry.info.dtype.itemsize
        buf = self._map(offset, nbytes, itemsize, name)
        if buf is None and self.direct and CAN_READ_DIRECT and nbytes >= MAP_MIN:
            buf = self._read_direct(offset, nbytes, itemsize, name)
        if buf is None:
            buf = torch.empty(nbytes, dtype=torch.uint8)
            if nbytes:
                self._read_into(buf, offset, name)
        return buf.view(entry.info.dtype).reshape(shape)

    def _read_direct(
        self, offset: int, nbytes: int, itemsize: int, name: str
    ) -> torch.Tensor | None:
        with self._opening:
            if self._direct_fd is None:
                try:
                    self._direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
                except OSError:
                    self.direct = False  # tmpfs and some others: read through the cache
                    return None
        try:
            return read_direct(self._direct_fd, offset, nbytes, itemsize)
        except EOFError:
            raise self._truncated(name) from None
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise CheckpointError(f"cannot read {self.path}: {e.strerror or e}.") from e
            self.direct = False  # an alignment this file system refuses: read through the cache
            return None

    def _open(self) -> int:
        with self._opening:
            if self._fd is None:
                self._fd = open_regular(self.path)
            return self._fd

    def _truncated(self, name: str) -> CheckpointError:
        return CheckpointError(
            f"{self.path}: unexpected end of file while reading {name!r}; the file "
            "changed or is truncated. Download it again."
        )

    def _map(self, offset: int, nbytes: int, itemsize: int, name: str) -> torch.Tensor | None:
        """The bytes mapped where they are cached (`alloy.io.pages.map_cached`), else None."""
        if not self._map_ok or nbytes < MAP_MIN:
            return None
        fd = self._open()
        if offset + nbytes > os.fstat(fd).st_size:
            raise self._truncated(name)
        try:
            return map_cached(fd, offset, nbytes, itemsize)
        except (OSError, ValueError):
            self._map_ok = False  # a file system without maps: read this file from now on
            return None

    def _read_into(self, buf: torch.Tensor, offset: int, name: str) -> None:
        fd = self._open()
        view = memoryview(buf.numpy()).cast("B")  # type: ignore[arg-type]
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise self._truncated(name)
            done += got

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None


class _ShardedSource:
    """Tensors spread over shard files, located through a name -> file map."""

    def __init__(self, root: Path, weight_map: dict[str, str], index_path: Path | None) -> None:
        self.root = root
        self._map = weight_map
        self._index_path = index_path
        self._names = list(weight_map)
        where = f" listed in {index_path}" if index_path else ""
        for fname in sorted(set(weight_map.values())):
            path = root / fname
            if not os.path.lexists(path) or (os.path.islink(path) and not path.exists()):
                raise CheckpointError(
                    f"shard {path}{where} is missing; download the checkpoint again."
                )
            check_regular(path)

    def names(self) -> list[str]:
        return list(self._names)


class SafetensorsCheckpoint(_ShardedSource):
    def __init__(self, root: Path, weight_map: dict[str, str], index_path: Path | None) -> None:
        super().__init__(root, weight_map, index_path)
        self._files: dict[str, SafetensorsFile] = {}
        for fname in sorted(set(weight_map.values())):
            f = SafetensorsFile(root / fname)
            self._files[fname] = f
            present = set(f.names())
            for name, mapped in weight_map.items():
                if mapped == fname and name not in present:
                    raise CheckpointError(
                        f"{index_path} maps tensor {name!r} to {fname}, but that shard does "
                        "not contain it; the checkpoint is inconsistent."
                    )

    def _file(self, name: str) -> SafetensorsFile:
        try:
            return self._files[self._map[name]]
        except KeyError:
            raise KeyError(name) from None

    def info(self, name: str) -> TensorInfo:
        return self._file(name).info(name)

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return self._file(name).get(name, rows)

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    def files(self) -> list[SafetensorsFile]:
        return list(self._files.values())


def read_past_cache(sources: Iterable[object], available: int) -> bool:
    """Read the safetensors inputs with ``O_DIRECT`` when together they are larger than the
    ``available`` memory: the page cache could not keep them for a next run anyway, and
    filling it costs system time for every byte (three 7B inputs from a cold disk with one
    reading thread: 0.71 GB/s through the cache, 1.08 GB/s direct).
    Inputs that fit are read through the cache, so that a second merge, an evaluation or a
    search trial finds them there. Returns whether direct reads were chosen."""
    files = [f for src in sources if isinstance(src, SafetensorsCheckpoint) for f in src.files()]
    unique = {f.path: f for f in files}
    total = sum(f.path.stat().st_size for f in unique.values())
    direct = total > available
    for f in files:
        f.direct = direct
    return direct


class TorchBinCheckpoint(_ShardedSource):
    """PyTorch pickle checkpoints, loaded safely (``weights_only=True``) through a memory map.

    One shard is mapped at a time; moving to another shard drops the previous map, so its
    pages leave the process's resident memory.
    """

    def __init__(self, root: Path, weight_map: dict[str, str], index_path: Path | None) -> None:
        super().__init__(root, weight_map, index_path)
        self._loaded_name: str | None = None
        self._loaded: dict[str, torch.Tensor] = {}
        self._infos: dict[str, TensorInfo] = {}

    def _shard(self, fname: str) -> dict[str, torch.Tensor]:
        if self._loaded_name != fname:
            self._loaded = {}
            self._loaded = self._load(self.root / fname)
            self._loaded_name = fname
            for k, v in self._loaded.items():
                self._infos[k] = TensorInfo(tuple(v.shape), v.dtype)
        return self._loaded

    @staticmethod
    def _load(path: Path) -> dict[str, torch.Tensor]:
        check_regular(path)
        try:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                # legacy (non-zip) serialization cannot be mapped
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors surface as many exception types
            raise CheckpointError(
                f"cannot load {path} safely (weights_only=True): {e}. Alloy never unpickles "
                "arbitrary objects; convert the checkpoint to safetensors if you trust it."
            ) from e
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors")
        return obj

    def info(self, name: str) -> TensorInfo:
        if name not in self._infos:
            self._shard(self._map[name])
        return self._infos[name]

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        t = self._shard(self._map[name])[name]
        if rows is not None:
            t = t[rows[0] : rows[1]]
        return t.clone()

    def close(self) -> None:
        self._loaded = {}
        self._loaded_name = None


WEIGHT_FORMATS = (
    ("model.safetensors.index.json", "model.safetensors", SafetensorsCheckpoint),
    ("pytorch_model.bin.index.json", "pytorch_model.bin", TorchBinCheckpoint),
)


def read_index(index_path: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index, validated: an object of tensor
    names (each once) to shard file names inside the model directory."""
    data = read_json_object(index_path)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict):
        got = "nothing" if weight_map is None else f"a {type(weight_map).__name__}"
        raise CheckpointError(
            f"{index_path}: `weight_map` must be an object mapping tensor names to shard files "
            f"(found {got}); the index is corrupt. Download it again."
        )
    for name, fname in weight_map.items():
        check_shard_name(index_path.parent, fname, index_path, name)
    return weight_map


def open_weights(root: Path) -> SafetensorsCheckpoint | TorchBinCheckpoint | GGUFSource:
    """Open the weights of a Hugging Face model directory (or of a GGUF file's view)."""
    from alloy.io.gguf import GGUFSource, find_gguf

    gguf = find_gguf(root)
    if gguf is not None:
        return GGUFSource(gguf)
    for index_name, single_name, cls in WEIGHT_FORMATS:
        index_path = root / index_name
        if os.path.lexists(index_path):
            return cls(root, read_index(index_path), index_path)
        single = root / single_name
        if os.path.lexists(single):
            if cls is SafetensorsCheckpoint:
                f = SafetensorsFile(single)
                names = f.names()
                f.close()
            else:
                names = list(TorchBinCheckpoint._load(single))
            return cls(root, dict.fromkeys(names, single_name), None)
    others = sorted(p.name for p in root.glob("*.safetensors")) + sorted(
        p.name for p in root.glob("*.bin")
    )
    if len(others) == 1 and others[0].endswith(".safetensors"):
        f = SafetensorsFile(root / others[0])
        names = f.names()
        f.close()
        return SafetensorsCheckpoint(root, dict.fromkeys(names, others[0]), None)
    found = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
    raise CheckpointError(
        f"{root} holds no checkpoint: expected model.safetensors, a sharded "
        "model.safetensors.index.json, or pytorch_model.bin[.index.json]"
        f" (found: {found})."
    )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (config.json and the like), read without ever blocking; as with
    transformers, a key given twice keeps its last value and NaN literals are accepted."""
    return read_json_object(path, constants=True, unique=False)


def close_all(sources: Iterable[object]) -> None:
    for s in sources:
        close = getattr(s, "close", None)
        if close is not None:
            close()
