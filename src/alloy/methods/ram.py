"""RAM and RAM+ (tensor-local): Reinforced Agent Merging (arXiv 2601.13572), as mergekit has it.

With task vectors ``τ_i = x_i − base`` and ``a_i = [|τ_i| > ε]`` (the entries model i changed),
``c = Σ_i a_i`` counts the models that changed each entry::

    ram:         merged = base + Σ_i a_i τ_i / max(c, 1)
                 (an entry changed by one model keeps its change, shared entries are averaged,
                 untouched entries keep the base)
    ramplus_tl:  ρ_i = #{a_i ∧ c > 1} / max(#{a_i ∧ c = 1}, ε)     per model, per tensor
                 λ_i = 1 + r · clamp(ρ_i, 0, α)
                 merged = base + Σ_i a_i τ_i · (λ_i [c = 1] + [c > 1] / c)

``ramplus_tl`` boosts a model's unique changes by how much of its update it shares with others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.errors import MergeComputationError
from alloy.methods.bounds import NonNegative, Scale
from alloy.methods.registry import NoParams, Params, method

_PAPER = "Reinforced Agent Merging (arXiv 2601.13572), mergekit's ram / ramplus_tl"


class RamParams(Params):
    epsilon: NonNegative = 1e-5  # |τ| above this counts as a change


class RamPlusParams(Params):
    r: Scale = 0.1  # strength of the boost of unique changes
    alpha: NonNegative = 0.2  # the shared/unique ratio is clipped to [0, alpha]
    epsilon: NonNegative = 1e-5


def _changes(
    inputs: Sequence[torch.Tensor], base: torch.Tensor, eps: float
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``a_i``: where model i changed an entry by more than ``eps`` (boolean, 1 byte an entry),
    and ``c = Σ_i a_i`` (float32, shape of base)."""
    active = [(x - base).abs_() > eps for x in inputs]
    counts = torch.zeros_like(base)
    for a in active:
        counts.add_(a)
    return active, counts


@method(
    "ram",
    params=RamParams,
    base="required",
    min_models=1,
    paper=_PAPER,
    summary="Keep each entry changed by one model, average entries changed by several.",
    feeding="rows",
    overhead=1.5,
)
def ram(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: RamParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``base + Σ_i a_i τ_i / max(c, 1)``."""
    if base is None:
        raise MergeComputationError("ram merges task vectors and needs a base model")
    merged = torch.zeros_like(base)
    counts = torch.zeros_like(base)
    for x in inputs:
        tv = x - base
        active = tv.abs() > params.epsilon
        merged.add_(tv.mul_(active))  # Σ a_i τ_i
        counts.add_(active)
    return merged.div_(counts.clamp_(min=1)).add_(base)


@method(
    "ramplus_tl",
    params=RamPlusParams,
    base="required",
    min_models=1,
    paper=_PAPER,
    summary="RAM, with each model's unique changes boosted by its shared/unique ratio in the "
    "tensor.",
    overhead=2.5,
)
def ramplus_tl(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: RamPlusParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """RAM with ``λ_i`` on the unique changes (see the module docstring)."""
    if base is None:
        raise MergeComputationError("ramplus_tl merges task vectors and needs a base model")
    eps = params.epsilon
    actives, counts = _changes(inputs, base, eps)  # a_i, c
    unique = counts == 1
    # An entry changed by several models contributes τ/c; a unique one τ·λ_i.
    shared_scale = torch.where(counts > 1, counts.reciprocal(), 0.0)
    merged = torch.zeros_like(base)
    for x, active in zip(inputs, actives):
        tv = x - base
        n_unique = int((active & unique).sum())
        n_shared = int(active.sum()) - n_unique
        rho = n_shared / max(n_unique, eps)
        lam = 1 + params.r * min(max(rho, 0.0), params.alpha)  # λ_i
        tv.mul_(active)
        merged.addcmul_(tv, shared_scale).add_(tv.mul_(unique), alpha=lam)
    return merged.add_(base)
