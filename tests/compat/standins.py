"""Tiny stand-in checkpoints for published recipes: the recipe's architecture and layer count,
hidden size 16, built with transformers' own classes (so tensor names and config keys are the
real ones), written once per (architecture, layers) and reused.

A family is a base model (``base``) and fine-tunes ``ft1``, ``ft2``, ...: each fine-tune is the
base plus a delta shared by the family (three times as large) and one of its own, so fine-tunes
are positively correlated as fine-tunes of one model are: model_stock's mean cosine is about 0.9
in every tensor, even the 16-entry norms (with equal shares a few of those came out negative,
where Alloy's clamp keeps the base: `docs/compatibility.md` row 29). Deltas are dense Gaussian,
a few % of each tensor's RMS, so no two magnitudes of a tensor are equal (the TIES cut never
depends on a sort's tie order). Every directory gets the same word-level tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from checkpoints import load_state_dict, write_tokenizer, write_weights

VOCAB = 64
_TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
_DECODER = {
    "vocab_size": VOCAB,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    **_TOKENS,
}

# architecture name used in recipe headers -> (config class, model class, config kwargs)
ARCHS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {**_DECODER, "tie_word_embeddings": False}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**_DECODER, "tie_word_embeddings": False}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**_DECODER, "tie_word_embeddings": True}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**_DECODER, "head_dim": 4}),
    "phi3": (
        "Phi3Config",
        "Phi3ForCausalLM",
        {**_DECODER, "num_key_value_heads": 4, "tie_word_embeddings": False},
    ),
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        {
            **_DECODER,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "tie_word_embeddings": False,
        },
    ),
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", {}),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"vocab_size": VOCAB, "n_positions": 64, "n_embd": 16, "n_head": 4, **_TOKENS},
    ),
}
_LAYER_KEY = {"gpt2": "n_layer"}


def _qwen2_vl_config(layers: int) -> Any:
    """A Qwen2-VL: the text decoder of ``layers`` layers, a two-block vision tower."""
    import transformers

    text = {**_DECODER, "num_hidden_layers": layers, "tie_word_embeddings": False}
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [1, 1, 0]}
    vision = {"depth": 2, "embed_dim": 16, "hidden_size": 16, "num_heads": 2, "mlp_ratio": 2}
    vision |= {"patch_size": 2, "temporal_patch_size": 1, "spatial_merge_size": 1}
    return transformers.Qwen2VLConfig(
        text_config=text, vision_config=vision, vocab_size=VOCAB, tie_word_embeddings=False
    )


def _fresh(arch: str, layers: int, path: Path) -> dict[str, torch.Tensor]:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    cfg_name, model_name, kwargs = ARCHS[arch]
    if arch == "qwen2_vl":
        config = _qwen2_vl_config(layers)
    else:
        config = getattr(transformers, cfg_name)(
            **kwargs, **{_LAYER_KEY.get(arch, "num_hidden_layers"): layers}
        )
    config.architectures = [model_name]
    torch.manual_seed(layers)
    model = getattr(transformers, model_name)(config)
    gen = torch.Generator().manual_seed(7919 + layers)
    with torch.no_grad():
        for p in model.parameters():  # no constant tensors (norms of ones, zero biases)
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(path)
    if arch == "qwen2_vl":  # as the published Qwen2-VL configs have it (mergekit reads it)
        cfg = json.loads((path / "config.json").read_text())
        cfg["num_hidden_layers"] = layers
        (path / "config.json").write_text(json.dumps(cfg, indent=2))
    write_tokenizer(path, VOCAB)
    return load_state_dict(path)


def _delta(name: str, w: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 100003 + sum(map(ord, name)))
    rms = max(float(w.pow(2).mean().sqrt()), 1e-3)
    return torch.randn(w.shape, generator=g, dtype=torch.float64) * 0.02 * rms


def family(root: Path, arch: str, layers: int, n_fine_tunes: int) -> list[Path]:
    """``[base, ft1, ..., ftN]`` of ``arch`` with ``layers`` layers under ``root`` (built once)."""
    if arch not in ARCHS:
        raise ValueError(f"no stand-in for architecture {arch!r}; known: {sorted(ARCHS)}")
    home = root / f"{arch}-{layers}"
    base = home / "base"
    if not (base / "config.json").exists():
        _fresh(arch, layers, base)
    state = load_state_dict(base)
    paths = [base]
    for i in range(1, n_fine_tunes + 1):
        ft = home / f"ft{i}"
        if not (ft / "config.json").exists():
            ft.mkdir(parents=True)
            for f in base.iterdir():
                if f.suffix == ".json" and "index" not in f.name:
                    (ft / f.name).write_bytes(f.read_bytes())
            tensors = {
                n: (w.double() + 3 * _delta(n, w, 0) + _delta(n, w, i)).to(w.dtype)
                for n, w in state.items()
            }
            write_weights(tensors, ft)
        paths.append(ft)
    return paths
