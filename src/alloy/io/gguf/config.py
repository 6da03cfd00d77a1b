"""``config.json`` from a GGUF file's metadata, and GGUF metadata from a ``config.json``.

Which metadata key is which config field is data (`archs.json`, ``"config"``); this module only
adds what the keys imply: the head size, tied embeddings (no ``output.weight``), the special
token ids and the storage dtype.
"""

from __future__ import annotations

from typing import Any

import torch

from alloy.errors import CheckpointError, OutputError
from alloy.io.gguf.archs import ArchSpec
from alloy.io.gguf.reader import GGUFFile

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_TOKEN_IDS = {
    "bos_token_id": "tokenizer.ggml.bos_token_id",
    "eos_token_id": "tokenizer.ggml.eos_token_id",
    "pad_token_id": "tokenizer.ggml.padding_token_id",
}


def _scalar(value: Any, key: str, file: GGUFFile) -> Any:
    if isinstance(value, list):  # per-layer values (e.g. head_count_kv): one, or refuse
        if len(set(value)) != 1:
            raise CheckpointError(
                f"{file.path}: metadata {key} differs across layers ({sorted(set(value))}); "
                "Alloy reads only models whose layers share one value."
            )
        return value[0]
    return value


def hf_config(file: GGUFFile, spec: ArchSpec, dtype: torch.dtype) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of ``file`` (tensors stored as ``dtype``)."""
    cfg: dict[str, Any] = {"architectures": [spec.architecture], "model_type": spec.model_type}
    for key, field in spec.config.items():
        value = file.arch_value(key)
        if value is not None and field not in cfg:
            cfg[field] = _scalar(value, f"{spec.name}.{key}", file)
    missing = [
        f for f in ("hidden_size", "num_hidden_layers", "num_attention_heads") if f not in cfg
    ]
    if missing:
        raise CheckpointError(
            f"{file.path}: the GGUF metadata lacks {', '.join(missing)} "
            f"(keys {spec.name}.embedding_length, .block_count, .attention.head_count)."
        )
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    if "head_dim" in spec.config.values():
        cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    names = {t.name: t for t in file.tensors}
    if "vocab_size" not in cfg:
        tokens = file.metadata.get("tokenizer.ggml.tokens")
        embd = names.get("token_embd.weight")
        cfg["vocab_size"] = len(tokens) if tokens else (embd.shape[0] if embd else None)
    cfg["tie_word_embeddings"] = "output.weight" not in names
    for field, key in _TOKEN_IDS.items():
        if file.metadata.get(key) is not None:
            cfg[field] = file.metadata[key]
    for field, value in spec.fixed.items():
        cfg.setdefault(field, value)
    for field, other in spec.copy.items():
        cfg.setdefault(field, cfg[other])
    cfg["torch_dtype"] = _DTYPE_NAMES.get(dtype, "float32")
    return cfg


def storage_dtype(dtypes: list[torch.dtype]) -> torch.dtype:
    """float16 or bfloat16 when every 2-D weight is stored so, else float32."""
    kinds = set(dtypes)
    return kinds.pop() if len(kinds) == 1 else torch.float32


def arch_metadata(config: dict[str, Any], spec: ArchSpec) -> dict[str, int | float]:
    """The ``<arch>.*`` metadata (key after the prefix -> value) for a Hugging Face config."""
    out: dict[str, int | float] = {}
    for key, field in spec.config.items():
        value = config.get(field)
        if value is None:  # transformers 5 nests rope_theta in rope_parameters
            value = (config.get("rope_parameters") or {}).get(field)
        if value is None and field == "head_dim":
            heads = config.get("num_attention_heads")
            value = config["hidden_size"] // heads if heads else None
        if isinstance(value, bool) or value is None:
            continue
        if not isinstance(value, (int, float)):
            raise OutputError(f"config.json field {field!r} is {value!r}, not a number.")
        out[key] = value
    for need in ("block_count", "embedding_length", "attention.head_count"):
        if need not in out:
            raise OutputError(
                f"config.json lacks {spec.config[need]!r}, which GGUF metadata "
                f"{spec.name}.{need} needs."
            )
    return out
