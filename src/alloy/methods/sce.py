"""SCE: Select, Calculate, Erase (Wan et al. 2024, FuseChat, arXiv 2408.07990).

With task vectors ``τ_i = x_i − base`` of one tensor::

    Select:     keep the k = int(select_topk · #{var > 0}) positions of largest variance
                Var_i(τ_i) (population variance across models); zero the rest in every τ_i
    Calculate:  ω_i = mean(τ_i²) / Σ_j mean(τ_j²)          (1/N when every τ_i is zero)
    Erase:      a_i = [sgn τ_i = sgn Σ_j τ_j]              (TIES sign election, unweighted)
    merged = base + Σ_i ω_i a_i τ_i / max(Σ_i ω_i a_i, 1e-6)

No per-model weights: the weights are the task vectors' mean squares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alloy.errors import MergeComputationError
from alloy.methods.bounds import Fraction
from alloy.methods.registry import NoParams, Params, method
from alloy.methods.sparsify import agrees_with, elect_sign, top_magnitude_mask


class SceParams(Params):
    int8_mask: bool = False  # accepted for mergekit configs; it only saves memory there
    select_topk: Fraction = 1.0  # share of the (non-zero-variance) positions kept


def variance_mask(task_vectors: torch.Tensor, select_topk: float) -> torch.Tensor:
    """Boolean mask [*shape] of the ``int(select_topk · #{var > 0})`` positions of largest
    variance across models (equal variances: lowest flat index first)."""
    if select_topk >= 1:
        return torch.ones(task_vectors.shape[1:], dtype=torch.bool, device=task_vectors.device)
    var = task_vectors.var(dim=0, unbiased=False)  # [*shape]
    k = int(int(torch.count_nonzero(var)) * select_topk) if select_topk > 0 else 0
    # Deliberate: an O(n) selection (kthvalue) with deterministic ties, not a top-k sort.
    return top_magnitude_mask(var, k)


@method(
    "sce",
    params=SceParams,
    base="required",
    min_models=1,
    paper="Wan et al. 2024, FuseChat: Knowledge Fusion of Chat Models (SCE, arXiv 2408.07990)",
    summary="Keep the positions where task vectors vary most, weight each task vector by its "
    "mean square, elect signs, average the agreeing entries.",
    overhead=2.5,
)
def sce(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SceParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Select by variance, calculate mean-square weights, erase minority signs, merge."""
    if base is None:
        raise MergeComputationError("sce merges task vectors and needs a base model")
    if not inputs:
        return base.clone()
    tvs = torch.stack([x - base for x in inputs])  # τ, [n, *shape]
    if params.select_topk < 1:
        tvs.mul_(variance_mask(tvs, params.select_topk))  # Select

    squares = [float(tv.square().mean()) for tv in tvs]  # Calculate: mean(τ_i²)
    total = math.fsum(squares)
    # Deliberate: uniform weights only when every task vector is zero. mergekit switches to
    # uniform weights below an absolute sum of 1e-6, which real fine-tunes' deltas (~1e-3) fall
    # under, so its Calculate step silently does nothing at the scale of LLM weights.
    omega = [s / total for s in squares] if total > 0 else [1 / len(squares)] * len(squares)

    agree = agrees_with(tvs, elect_sign(tvs))  # Erase: a_i, [n, *shape]
    merged = torch.zeros_like(base)
    weight = torch.zeros_like(base)
    for tv, a, w in zip(tvs, agree, omega, strict=True):
        merged.addcmul_(tv, a, value=w)  # Σ ω_i a_i τ_i
        weight.add_(a, alpha=w)  # Σ ω_i a_i
    return merged.div_(weight.clamp_(min=1e-6)).add_(base)
