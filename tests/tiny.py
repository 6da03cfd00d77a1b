"""Raw tiny checkpoints written with safetensors alone (no transformers), for engine tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def tiny_tensors(
    seed: int, layers: int = 3, hidden: int = 4, vocab: int = 10, tied: bool = False
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {"model.embed_tokens.weight": torch.randn(vocab, hidden, generator=g)}
    for i in range(layers):
        t[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.randn(hidden, hidden, generator=g)
        t[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(2 * hidden, hidden, generator=g)
        t[f"model.layers.{i}.input_layernorm.weight"] = torch.randn(hidden, generator=g)
    t["model.norm.weight"] = torch.randn(hidden, generator=g)
    if not tied:
        t["lm_head.weight"] = torch.randn(vocab, hidden, generator=g)
    return t


def write_tiny(
    path: Path,
    seed: int,
    *,
    layers: int = 3,
    tied: bool = False,
    dtype: torch.dtype = torch.float32,
    tensors: dict[str, torch.Tensor] | None = None,
    config: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Write a tiny Llama-named checkpoint; return its tensors."""
    path.mkdir(parents=True, exist_ok=True)
    t = tensors if tensors is not None else tiny_tensors(seed, layers, tied=tied)
    t = {k: v.to(dtype) for k, v in t.items()}
    save_file(t, path / "model.safetensors", metadata={"format": "pt"})
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": layers,
        "tie_word_embeddings": tied,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    cfg.update(config or {})
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    (path / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return t


def read_dir(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out
