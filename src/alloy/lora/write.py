"""Writing a PEFT LoRA adapter directory: ``adapter_config.json``, ``adapter_model.safetensors``
and a ``README.md`` with the per-module table. Written into a temporary sibling and renamed
into place when complete, like a merged model.

Every module's scale is 1: ``lora_alpha = r`` and, for modules of another rank,
``rank_pattern[name] = alpha_pattern[name] = r_module`` (full module names, which match exactly
by PEFT's rule), so ``B @ A`` is the delta itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from alloy.errors import OutputError
from alloy.io.lora.adapter import CONFIG_NAME, PEFT_PREFIX
from alloy.io.output import commit_output, discard, prepare_output
from alloy.tabulate import markdown


@dataclass
class OutModule:
    """One module of the adapter to write: ``delta = B @ A`` in PEFT's orientation."""

    name: str
    embedding: bool
    b: torch.Tensor  # [out, r]
    a: torch.Tensor  # [r, in]
    bias: torch.Tensor | None = None  # lora_B.bias [out]

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


def module_tensors(modules: Iterable[OutModule], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for m in modules:
        key = PEFT_PREFIX + m.name
        a_key, b_key = (
            (".lora_embedding_A", ".lora_embedding_B")
            if m.embedding
            else (".lora_A.weight", ".lora_B.weight")
        )
        out[key + a_key] = m.a.to("cpu", dtype).contiguous()
        out[key + b_key] = m.b.to("cpu", dtype).contiguous()
        if m.bias is not None:
            out[key + ".lora_B.bias"] = m.bias.to("cpu", dtype).contiguous()
    return out


def adapter_config(
    modules: Sequence[OutModule],
    *,
    base_model: str | None,
    revision: str | None = None,
    task_type: str | None = None,
    fan_in_fan_out: bool = False,
    modules_to_save: list[str] | None = None,
    lora_bias: bool = False,
    lora_dropout: float = 0.0,
) -> dict[str, Any]:
    """A plain LoRA ``adapter_config.json`` with scale 1 for every module."""
    ranks = {m.name: m.rank for m in modules}
    r = max(ranks.values())
    pattern = {n: k for n, k in ranks.items() if k != r}
    return {
        "peft_type": "LORA",
        "base_model_name_or_path": base_model,
        "revision": revision,
        "task_type": task_type,
        "inference_mode": True,
        "r": r,
        "lora_alpha": r,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks),
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "lora_bias": lora_bias,
        "lora_dropout": lora_dropout,
        "modules_to_save": modules_to_save or None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def write_adapter(
    out: Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    readme: str,
    *,
    force: bool,
    inputs: Iterable[Path],
) -> Path:
    """Write the adapter directory ``out`` atomically; never over one of ``inputs``."""
    tmp = prepare_output(Path(out), force, inputs)
    try:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(readme)
        commit_output(tmp, Path(out))
    except OSError as e:
        discard(tmp)
        raise OutputError(f"writing {out} failed: {e}. Nothing was written.") from e
    except BaseException:
        discard(tmp)
        raise
    return Path(out).expanduser().resolve()


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A Markdown table (also readable as plain text)."""
    return markdown(header, rows, padded=True)
