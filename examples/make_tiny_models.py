"""Write three tiny Llama-architecture checkpoints to merge: a base and two fine-tunes.

    python examples/make_tiny_models.py examples/tiny

The base has random weights; each fine-tune is the base plus a seeded, mostly sparse change,
the way real fine-tunes move a few weights a lot and most weights a little. The folders are
complete Hugging Face model directories (config, safetensors weights, a word-level tokenizer)
that transformers can load. Needs only torch and safetensors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, VOCAB = 64, 128, 4, 4, 2, 96
WORDS = [f"w{i}" for i in range(VOCAB - 4)]


def llama_config() -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "bfloat16",
    }


def base_tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    head_dim = HIDDEN // HEADS

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    t = {"model.embed_tokens.weight": w(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = w(HIDDEN, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = w(KV_HEADS * head_dim, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = w(KV_HEADS * head_dim, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = w(HIDDEN, HIDDEN)
        t[p + "mlp.gate_proj.weight"] = w(INTERMEDIATE, HIDDEN)
        t[p + "mlp.up_proj.weight"] = w(INTERMEDIATE, HIDDEN)
        t[p + "mlp.down_proj.weight"] = w(HIDDEN, INTERMEDIATE)
        t[p + "input_layernorm.weight"] = torch.ones(HIDDEN)
        t[p + "post_attention_layernorm.weight"] = torch.ones(HIDDEN)
    t["model.norm.weight"] = torch.ones(HIDDEN)
    t["lm_head.weight"] = w(VOCAB, HIDDEN)
    return t


def fine_tune(base: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """base + a small dense change + a larger change on a random 10% of the weights."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in base.items():
        dense = torch.randn(w.shape, generator=g) * 0.001
        mask = torch.rand(w.shape, generator=g) < 0.1
        sparse = torch.randn(w.shape, generator=g) * 0.01 * mask
        out[name] = w + dense + sparse
    return out


def tokenizer_files() -> dict[str, object]:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(WORDS)}
    special = [
        {
            "id": i,
            "content": c,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for c, i in list(vocab.items())[:4]
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "model_max_length": 256,
    }
    return {"tokenizer.json": tokenizer, "tokenizer_config.json": config}


def write_model(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
        path / "model.safetensors",
        metadata={"format": "pt"},
    )
    (path / "config.json").write_text(json.dumps(llama_config(), indent=2) + "\n")
    (path / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}, indent=2) + "\n"
    )
    for name, content in tokenizer_files().items():
        (path / name).write_text(json.dumps(content, indent=2) + "\n")


def main(out: Path) -> None:
    base = base_tensors(seed=0)
    models = {"base": base, "chat": fine_tune(base, seed=1), "code": fine_tune(base, seed=2)}
    for name, tensors in models.items():
        write_model(out / name, tensors)
        size = sum(v.numel() for v in tensors.values())
        print(f"wrote {out / name}  ({len(tensors)} tensors, {size:,} parameters, bfloat16)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/tiny"))
