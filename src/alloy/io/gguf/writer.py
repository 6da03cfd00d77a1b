"""Writing a GGUF file (F32, F16, BF16 or Q8_0) from a Hugging Face model directory.

Tensors are renamed through `archs.json`, llama.cpp's storage transforms are applied (the Q/K
row permutation for llama, ``+1`` on Gemma's norms) so that llama.cpp and transformers read the
file back right, and they are streamed: the header and tensor table are written first, then
one tensor at a time. 1-D tensors (norms, biases) are stored as F32, as llama.cpp does; a
matrix whose rows are not a whole number of Q8_0 blocks (32 values) is stored as F16.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alloy.errors import OutputError
from alloy.io.gguf import archs
from alloy.io.gguf._lib import gguf_module
from alloy.io.gguf.config import arch_metadata
from alloy.io.gguf.tokenizer import tokenizer_metadata

# name -> (ggml type, llama.cpp general.file_type)
TYPES = {"F32": (0, 0), "F16": (1, 1), "BF16": (30, 32), "Q8_0": (8, 7)}
_FLOAT_KEYS = ("rope.freq_base", "attention.layer_norm_rms_epsilon")


@dataclass(frozen=True)
class _Planned:
    hf: str
    gguf: str
    shape: tuple[int, ...]
    qtype: int
    heads: int | None
    offset: float

    @property
    def nbytes(self) -> int:
        n = math.prod(self.shape)
        return {0: 4 * n, 1: 2 * n, 30: 2 * n, 8: n // 32 * 34}[self.qtype]


def _plan(source: Any, spec: archs.ArchSpec, config: dict[str, Any], qtype: int) -> list[_Planned]:
    tied = bool(config.get("tie_word_embeddings", False))
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    out = []
    for name in source.names():
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reads a tied output layer from token_embd
        g = spec.to_gguf(name)
        if g is None:
            raise OutputError(
                f"tensor {name!r} has no GGUF name in Alloy's {spec.name} map "
                "(alloy/io/gguf/archs.json); GGUF cannot hold it."
            )
        shape = tuple(source.info(name).shape)
        t = qtype if len(shape) >= 2 else 0
        if t == 8 and shape[-1] % 32:
            t = 1
        qk = spec.is_qk(g)
        h = None if qk is None else (heads if qk == "q" else kv_heads)
        offset = spec.norm_offset if spec.is_norm(g) else 0.0
        out.append(_Planned(name, g, shape, t, h, offset))
    return out


def _encode(t: torch.Tensor, p: _Planned, gguf: Any) -> np.ndarray:
    t = t.float()
    if p.heads is not None:
        t = archs.permute_rows(t, p.heads, forward=True)
    if p.offset:
        t = t + p.offset
    t = t.contiguous()
    if p.qtype == 0:
        return t.numpy()
    if p.qtype == 1:
        return t.half().numpy()
    if p.qtype == 30:
        return t.bfloat16().view(torch.int16).numpy()
    q: np.ndarray = gguf.quants.quantize(t.numpy(), gguf.GGMLQuantizationType.Q8_0)
    return q


def _add(writer: Any, gguf: Any, key: str, value: Any, as_float: bool = False) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list):
        writer.add_array(key, value)
    elif as_float or isinstance(value, float):
        writer.add_float32(key, float(value))
    else:
        writer.add_uint32(key, int(value))


def _metadata(
    writer: Any,
    gguf: Any,
    spec: archs.ArchSpec,
    config: dict[str, Any],
    model_dir: Path,
    dtype: str,
) -> None:
    writer.add_name(model_dir.name)
    writer.add_file_type(TYPES[dtype][1])
    if dtype == "Q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    values = arch_metadata(config, spec)
    if "attention.key_length" in values:
        values["attention.value_length"] = values["attention.key_length"]
    for key, value in values.items():
        _add(writer, gguf, f"{spec.name}.{key}", value, key in _FLOAT_KEYS)
    for key, value in tokenizer_metadata(model_dir, config).items():
        _add(writer, gguf, key, value)


def write_gguf(model_dir: Path, out_file: Path, dtype: str = "F16") -> Path:
    """Write the Hugging Face model (or merge output) in ``model_dir`` as GGUF ``out_file``."""
    from alloy.io.gguf.view import read_model_config
    from alloy.io.sources import open_weights

    gguf = gguf_module(OutputError, "writing")
    dtype = dtype.upper()
    if dtype not in TYPES:
        raise OutputError(
            f"GGUF type {dtype!r} is not one Alloy writes; use one of {', '.join(TYPES)}."
        )
    config = read_model_config(model_dir)
    spec = archs.spec_for_model_type(str(config.get("model_type", "")))
    if spec is None:
        raise OutputError(
            f"{model_dir}: model_type {config.get('model_type')!r} has no GGUF map in Alloy "
            f"(known: {', '.join(archs.known())})."
        )
    source = open_weights(model_dir)
    tmp = out_file.with_name(f".{out_file.name}.partial")
    try:
        plan = _plan(source, spec, config, TYPES[dtype][0])
        writer = gguf.GGUFWriter(None, spec.name)
        _metadata(writer, gguf, spec, config, model_dir, dtype)
        for p in plan:
            qt = gguf.GGMLQuantizationType(p.qtype)
            writer.add_tensor_info(p.gguf, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=qt)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for p in plan:
            writer.write_tensor_data(_encode(source.get(p.hf), p, gguf))
        writer.close()
        os.replace(tmp, out_file)
    except OSError as e:
        raise OutputError(f"cannot write {out_file}: {e}") from e
    finally:
        source.close()
        tmp.unlink(missing_ok=True)
    return out_file
