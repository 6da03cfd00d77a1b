"""TIES-Merging (Yadav et al. 2023, arXiv 2306.01708): trim, elect sign, disjoint merge.

    δ_i   = x_i − base
    δ̂_i   = trim(δ_i): keep the k = int(density·numel) entries of largest |δ_i|, zero the rest
    W_i   = w_i · δ̂_i                             weighted before the election, as mergekit does
    γ     = sgn(Σ_i W_i);  a_i = [sgn W_i = γ]    elect
    Δ     = Σ_i a_i·W_i / Σ_i a_i·w_i             disjoint mean (the division when normalize)
    merged = base + λ·Δ

Among entries tied at the trim threshold the lowest flat indices are kept, so the result is
deterministic; the streamed accelerator finds the same entries chunk by chunk
(`alloy.methods.streamed.select`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.methods.registry import method
from alloy.methods.sparsify import elect_sign, magnitude_keep_count, top_magnitude_mask
from alloy.methods.streamed.task_vectors import family_accelerator
from alloy.methods.task_arithmetic import TaskModelParams, TiesParams
from alloy.methods.task_vectors import (
    add_to_base,
    disjoint_mean,
    l1_rescale,
    task_vectors,
    weigh,
)

TIES_PAPER = (
    "Yadav et al. 2023, TIES-Merging: Resolving Interference When Merging Models (arXiv 2306.01708)"
)


def trim(delta: torch.Tensor, density: float, rescale: bool) -> float:
    """TIES trim, in place: ``δ`` keeps its top-``density`` magnitudes. Returns the rescale
    factor (the L1 norm matched when ``rescale``, else 1)."""
    if density >= 1:
        return 1.0  # keeps everything
    keep = top_magnitude_mask(delta, magnitude_keep_count(delta.numel(), density))
    scale = l1_rescale(delta, keep) if rescale else 1.0
    delta.mul_(keep)
    return scale


@method(
    "ties",
    params=TiesParams,
    model_params=TaskModelParams,
    base="required",
    paper=TIES_PAPER,
    summary="Trim each task vector to its top-density magnitudes, elect signs, "
    "average the agreeing entries.",
    feeding="rows_after_passes",
    accelerator=family_accelerator("magnitude", elect=True, method="ties"),
    overhead=3.5,
)
def ties(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TiesParams,
    model_params: Sequence[TaskModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Trim, elect, disjoint mean (see the module docstring)."""
    base, deltas = task_vectors(inputs, base, model_params, "ties")  # δ_i
    if not model_params:
        return base.clone()
    scales = [trim(d, p.density, params.rescale) for d, p in zip(deltas, model_params)]  # δ̂_i
    weights = [p.weight for p in model_params]
    weighted = weigh(deltas, weights, scales)  # W_i = w_i·δ̂_i
    sign = elect_sign(weighted)  # γ
    merged = disjoint_mean(weighted, sign, weights, params.normalize)  # Δ
    return add_to_base(base, merged, params.lambda_)  # base + λ·Δ
