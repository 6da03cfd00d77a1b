"""A GGUF file as a lazy `TensorSource`: Hugging Face names, tensors dequantized on read.

The header and metadata are parsed with the ``gguf`` package's reader, which is dropped
afterwards; tensor bytes are then read with positioned reads into fresh buffers (as for
safetensors), so nothing stays mapped. Quantized tensors are dequantized with ``gguf.quants``
to float32; F16 and BF16 tensors keep their dtype. llama.cpp's storage transforms are undone
per architecture (`archs.json`): the Q/K row permutation of llama, the ``+1`` of Gemma's norms.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alloy.errors import CheckpointError
from alloy.io.gguf import archs
from alloy.io.gguf._lib import gguf_module
from alloy.io.sources import TensorInfo


@dataclass(frozen=True)
class RawTensor:
    name: str  # the GGUF name
    qtype: int  # GGMLQuantizationType value
    shape: tuple[int, ...]  # row-major (torch) order
    offset: int  # absolute byte offset
    nbytes: int


def _field_value(field: Any, types: Any) -> Any:
    """A metadata value as plain Python (strings decoded, arrays as lists)."""
    main = field.types[0]
    if main == types.ARRAY:
        if len(field.types) > 2:
            return None  # nested arrays: nothing Alloy reads
        if field.types[-1] == types.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [v for i in field.data for v in field.parts[i].tolist()]
    if main == types.STRING:
        return bytes(field.parts[-1]).decode("utf-8", "replace")
    value = field.parts[-1].tolist()[0]
    if main == types.FLOAT32:  # 1e-05, not 9.999999747378752e-06
        return float(str(np.float32(value)))
    return value


class GGUFFile:
    """One GGUF file's metadata and tensor table (no tensor data is read here)."""

    def __init__(self, path: Path) -> None:
        gguf = gguf_module()
        self.path = path
        try:
            reader = gguf.GGUFReader(str(path))
        except Exception as e:  # the reader raises ValueError, KeyError, struct errors...
            raise CheckpointError(
                f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); it is corrupt, "
                "truncated or of an unsupported GGUF version. Download it again."
            ) from e
        types = gguf.GGUFValueType
        self.metadata: dict[str, Any] = {
            k: _field_value(f, types) for k, f in reader.fields.items() if not k.startswith("GGUF.")
        }
        self.tensors = [
            RawTensor(
                t.name,
                int(t.tensor_type),
                tuple(int(d) for d in reversed(t.shape.tolist())),
                int(t.data_offset),
                int(t.n_bytes),
            )
            for t in reader.tensors
        ]
        del reader
        size = path.stat().st_size
        for t in self.tensors:
            if t.offset + t.nbytes > size:
                raise CheckpointError(
                    f"{path} is truncated: tensor {t.name!r} ends at byte {t.offset + t.nbytes} "
                    f"but the file has {size} bytes. Download it again."
                )

    @property
    def arch(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise CheckpointError(f"{self.path} has no general.architecture metadata key.")
        return arch

    def spec(self) -> archs.ArchSpec:
        spec = archs.spec(self.arch)
        if spec is None:
            raise CheckpointError(
                f"{self.path}: GGUF architecture {self.arch!r} has no tensor-name map in Alloy "
                f"(known: {', '.join(archs.known())}); add one to alloy/io/gguf/archs.json."
            )
        return spec

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.arch}.{key}", default)


_KEEP = {0: torch.float32, 1: torch.float16, 30: torch.bfloat16}  # F32, F16, BF16


def dequantize(raw: np.ndarray, qtype: int, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """The tensor ``shape`` stored in the bytes ``raw`` with ggml type ``qtype``."""
    if qtype == 0:
        return torch.from_numpy(raw.view(np.float32).reshape(shape))
    if qtype == 1:
        return torch.from_numpy(raw.view(np.float16).reshape(shape))
    if qtype == 30:
        return torch.from_numpy(raw.view(np.int16).reshape(shape)).view(torch.bfloat16)
    gguf = gguf_module()
    try:
        qt = gguf.GGMLQuantizationType(qtype)
        block, _ = gguf.GGML_QUANT_SIZES[qt]
        rows = raw.reshape(math.prod(shape[:-1]), -1) if shape[-1] % block == 0 else None
        if rows is None:
            raise ValueError(f"its last dimension {shape[-1]} is not a multiple of {block}")
        out = gguf.quants.dequantize(rows, qt)
    except (NotImplementedError, ValueError) as e:
        raise CheckpointError(
            f"tensor {name!r} is stored as ggml type {qtype} and cannot be dequantized ({e}). "
            "Supported: F32, F16, BF16 and every type gguf.quants dequantizes (Q4_0, Q4_1, Q5_0, "
            "Q5_1, Q8_0, Q2_K..Q6_K, ...); upgrade the gguf package or requantize the file."
        ) from e
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32).reshape(shape))


@dataclass(frozen=True)
class _Mapped:
    raw: RawTensor
    info: TensorInfo
    heads: int | None  # permuted Q/K rows: their head count
    offset: float  # subtracted after dequantization


class GGUFSource:
    """A GGUF checkpoint read lazily under Hugging Face tensor names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = GGUFFile(path)
        self.spec = self.file.spec()
        self._entries: dict[str, _Mapped] = {}
        for raw in self.file.tensors:
            hf = self.spec.to_hf(raw.name)
            if hf is None:
                if raw.name in self.spec.ignored:
                    continue
                raise CheckpointError(
                    f"{path}: tensor {raw.name!r} has no Hugging Face name in Alloy's "
                    f"{self.spec.name} map; add it to alloy/io/gguf/archs.json."
                )
            self._entries[hf] = self._mapped(raw)
        self._fd: int | None = None

    def _mapped(self, raw: RawTensor) -> _Mapped:
        qk = self.spec.is_qk(raw.name)
        heads = None
        if qk is not None:
            n = self.file.arch_value("attention.head_count")
            heads = int(self.file.arch_value("attention.head_count_kv", n) if qk == "k" else n)
        offset = self.spec.norm_offset if self.spec.is_norm(raw.name) else 0.0
        dtype = _KEEP.get(raw.qtype, torch.float32) if offset == 0.0 else torch.float32
        return _Mapped(raw, TensorInfo(raw.shape, dtype), heads, offset)

    def names(self) -> list[str]:
        return list(self._entries)

    def info(self, name: str) -> TensorInfo:
        return self._entries[name].info

    def raw(self, name: str) -> RawTensor:
        """The stored tensor behind Hugging Face name ``name``."""
        return self._entries[name].raw

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        e = self._entries[name]
        shape, start, nbytes = e.raw.shape, e.raw.offset, e.raw.nbytes
        if rows is not None and e.heads is None and shape:
            row_bytes = nbytes // shape[0]
            start += rows[0] * row_bytes
            nbytes = (rows[1] - rows[0]) * row_bytes
            shape = (rows[1] - rows[0], *shape[1:])
            rows = None
        t = dequantize(self._read(start, nbytes, e.raw.name), e.raw.qtype, shape, e.raw.name)
        if e.heads is not None:
            t = archs.permute_rows(t, e.heads, forward=False).contiguous()
        if e.offset:
            t = t.float() - e.offset
        t = t.to(e.info.dtype)
        return t if rows is None else t[rows[0] : rows[1]].clone()

    def _read(self, offset: int, nbytes: int, name: str) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        buf = np.empty(nbytes, dtype=np.uint8)
        view = buf.data
        done = 0
        while done < nbytes:
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise CheckpointError(
                    f"{self.path}: unexpected end of file while reading {name!r}; the file "
                    "changed or is truncated. Download it again."
                )
            done += got
        return buf

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
