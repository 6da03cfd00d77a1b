"""`alloy convert`: GGUF <-> Hugging Face.

``convert(src, dst)`` reads ``src`` as GGUF when it is a ``.gguf`` file (or a directory holding
one) and writes the Hugging Face directory ``dst`` (``config.json``, tokenizer files from the
metadata, ``model.safetensors`` shards of the dequantized tensors); otherwise ``src`` is a
Hugging Face directory or a merge output and ``dst`` the GGUF file written (F32, F16, BF16 or
Q8_0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from alloy.errors import OutputError
from alloy.io.gguf.reader import GGUFSource
from alloy.io.gguf.view import find_gguf, model_files, write_model_files
from alloy.io.gguf.writer import TYPES, write_gguf
from alloy.io.output import commit_output, discard, prepare_output
from alloy.io.sharding import parse_size, plan_shards
from alloy.io.sources import TensorInfo
from alloy.io.writer import OutTensor, ShardedSafetensorsWriter

HF_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Converted:
    out: Path
    direction: str  # "gguf->hf" or "hf->gguf"
    tensors: int


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    dtype: str | None = None,
    force: bool = False,
    out_shard_size: str | int = "5GB",
) -> Converted:
    """Convert ``src`` to ``dst``; ``dtype`` is the GGUF type written (F16 by default) or, for
    GGUF -> Hugging Face, the safetensors dtype (default: F16/BF16 tensors keep theirs, the
    dequantized ones are float32)."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    gguf = find_gguf(src)
    if gguf is None:
        if dst.exists() and not force:
            raise OutputError(f"{dst} exists; pass --force to replace it.")
        if dst.is_dir():
            raise OutputError(f"{dst} is a directory; give the path of the .gguf file to write.")
        out = write_gguf(src, dst, dtype or "F16")
        return Converted(out, "hf->gguf", len(_gguf_tensor_names(out)))
    return _to_hf(gguf, dst, dtype, force, parse_size(out_shard_size))


def _gguf_tensor_names(path: Path) -> list[str]:
    from alloy.io.gguf.reader import GGUFFile

    return [t.name for t in GGUFFile(path).tensors]


def _to_hf(gguf: Path, out: Path, dtype: str | None, force: bool, shard: int) -> Converted:
    if dtype is not None and dtype.lower() not in HF_DTYPES:
        known = ", ".join(HF_DTYPES)
        raise OutputError(
            f"--dtype {dtype} is not a safetensors dtype Alloy writes from GGUF; use {known} "
            f"(GGUF types {', '.join(TYPES)} apply when writing a GGUF file)."
        )
    cast = HF_DTYPES[dtype.lower()] if dtype else None
    source = GGUFSource(gguf)
    tmp = prepare_output(out, force, [gguf])
    try:
        layout = [
            OutTensor(n, TensorInfo(source.info(n).shape, cast or source.info(n).dtype))
            for n in source.names()
        ]
        files = model_files(source)
        if cast is not None:
            files["config.json"]["torch_dtype"] = dtype
        groups = plan_shards([t.info.nbytes for t in layout], shard)
        writer = ShardedSafetensorsWriter(tmp, [[layout[i] for i in g] for g in groups])
        for t in layout:
            writer.add(t.name, source.get(t.name).to(t.info.dtype))
        writer.finish()
        write_model_files(files, tmp)
        commit_output(tmp, out)
    except BaseException:
        discard(tmp)
        raise
    finally:
        source.close()
    return Converted(out.resolve(), "gguf->hf", len(layout))
