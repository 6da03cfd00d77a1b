"""Real PEFT LoRA adapters on the tiny checkpoints, and PEFT's own merge as the oracle.

`make_adapter(base, out, seed=..., **lora_config)` wraps the base with `peft.get_peft_model`,
gives every LoRA factor seeded random values (PEFT initialises B to zero, which would make every
delta vanish) and every `modules_to_save` copy a seeded perturbation, and saves the adapter with
`save_pretrained` (safetensors, or `adapter_model.bin` with `fmt="bin"`).

`peft_merged(base, adapter)` is what PEFT makes of it: `PeftModel.from_pretrained(...)
.merge_and_unload().state_dict()`, in float32.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

Weights = dict[str, torch.Tensor]


def load_causal_lm(path: Path) -> Any:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def make_adapter(
    base: Path,
    out: Path,
    *,
    seed: int,
    fmt: str = "safetensors",
    scale: float = 0.1,
    **lora_config: Any,
) -> Path:
    """Save a PEFT LoRA adapter of `base` with seeded non-zero factors into `out`."""
    import peft

    lora_config.setdefault("r", 4)
    lora_config.setdefault("lora_alpha", 8)
    model = load_causal_lm(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, peft.LoraConfig(**lora_config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(out, safe_serialization=fmt == "safetensors")
    return out


def peft_model(base: Path, adapter: Path) -> Any:
    import peft

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(load_causal_lm(base), adapter).eval()


def peft_merged(base: Path, adapter: Path) -> Weights:
    """PEFT's merge of `adapter` into `base` (the oracle), as a float32 state dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = peft_model(base, adapter).merge_and_unload()
    return {k: v.detach().float().clone() for k, v in merged.state_dict().items()}


def save_peft_merged(base: Path, adapter: Path, out: Path) -> Path:
    """PEFT's merge written as a model directory (what mergekit's LoRA cache holds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model(base, adapter).merge_and_unload().save_pretrained(out)
    return out


def logits(model: Any, vocab: int = 128) -> torch.Tensor:
    ids = torch.randint(4, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids).logits


def max_errors(got: Weights, want: Weights) -> tuple[float, float]:
    """Max over tensors of max |got − want| and of ‖got − want‖ / ‖want‖."""
    abs_err = rel_err = 0.0
    for n, w in want.items():
        d = got[n].float() - w.float()
        abs_err = max(abs_err, float(d.abs().max()))
        rel_err = max(rel_err, float(d.norm() / w.float().norm().clamp_min(1e-30)))
    return abs_err, rel_err
