"""Mixtral's two tensor layouts: per expert, as checkpoints store it and Alloy reads and writes
it (``block_sparse_moe.experts.{e}.w1/w2/w3.weight``: one [I, H] or [H, I] matrix per expert and
projection), and fused, as transformers 5 builds it on load and mergekit 0.1.5 reads (through
transformers' conversion mapping), merges and writes it (``mlp.experts.gate_up_proj``: all
experts' w1 and w3 in one [E, 2I, H] tensor, gate first; ``mlp.experts.down_proj``: [E, H, I]).
"""

from __future__ import annotations

import re

import torch

_EXPERT = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")


def is_expert(name: str) -> bool:
    return name.endswith(("experts.gate_up_proj", "experts.down_proj")) or bool(_EXPERT.match(name))


def fuse(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-expert layout rewritten in the fused one (other tensors renamed only)."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    for name, t in state.items():
        m = _EXPERT.match(name)
        if m:
            experts.setdefault(m.group(1), {}).setdefault(m.group(3), {})[int(m.group(2))] = t
        else:
            out[name.replace(".block_sparse_moe.", ".mlp.")] = t
    for layer, w in experts.items():

        def stack(proj: str, w: dict[str, dict[int, torch.Tensor]] = w) -> torch.Tensor:
            return torch.stack([w[proj][e] for e in sorted(w[proj])])

        out[f"{layer}.mlp.experts.gate_up_proj"] = torch.cat([stack("w1"), stack("w3")], dim=1)
        out[f"{layer}.mlp.experts.down_proj"] = stack("w2")
    return out
