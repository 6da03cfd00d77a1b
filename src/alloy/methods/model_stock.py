"""Model Stock (Jang, Yun & Han, ECCV 2024, arXiv 2403.19522).

Fine-tunes of one base lie on a thin shell around the centre of the weight distribution; the
average of N of them, pulled back toward the base by the right amount, approximates it. With
offsets ``δ_i = x_i − base``, per tensor (or per row with ``filter_wise``)::

    cos θ = mean over pairs i < j of ⟨δ_i, δ_j⟩ / (‖δ_i‖ ‖δ_j‖)
    t     = N cos θ / (1 + (N − 1) cos θ),   cos θ clamped to [0, 1]
    merged = t · mean_i(x_i) + (1 − t) · base

Needs a base and at least two other models. The paper's angle is between fine-tunes that
moved in related directions (cos θ ≥ 0, so t ∈ [0, 1]); uncorrelated or opposed offsets give
t = 0, the base, instead of mergekit's negative or larger-than-one t.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.errors import MergeComputationError
from alloy.methods.registry import NoParams, Params, method

# Norm products are clamped below at this before dividing (mergekit's tolerance).
_NORM_EPS = 1e-6


class ModelStockParams(Params):
    filter_wise: bool = False  # one t per row (vectors along the last dimension), not per tensor


def interpolation_ratio(offsets: Sequence[torch.Tensor], filter_wise: bool) -> torch.Tensor:
    """t of the module docstring: a scalar tensor, or one value per row ([..., 1])."""
    vectors = [d.reshape(-1, d.shape[-1]) if filter_wise else d.reshape(-1) for d in offsets]
    norms = [torch.linalg.vector_norm(v, dim=-1) for v in vectors]
    cos_sum = torch.zeros_like(norms[0])
    pairs = 0
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            dot = torch.linalg.vecdot(vectors[i], vectors[j])
            cos_sum += (dot / (norms[i] * norms[j]).clamp(min=_NORM_EPS)).clamp(-1, 1)
            pairs += 1
    # Deliberate: cos θ clamped to [0, 1], so t ∈ [0, 1]; mergekit leaves a negative cosine in,
    # which gives t < 0 (extrapolating away from the fine-tunes) or t > 1.
    cos = (cos_sum / pairs).clamp_(0, 1)
    n = len(vectors)
    t = n * cos / (1 + (n - 1) * cos)
    return t.unsqueeze(-1) if filter_wise else t


@method(
    "model_stock",
    params=ModelStockParams,
    base="required",
    min_models=2,
    paper="Jang, Yun & Han 2024, Model Stock: All we need is just a few fine-tuned models "
    "(arXiv 2403.19522)",
    summary="Average of the fine-tunes pulled toward the base by a ratio set by the angle "
    "between their offsets.",
    overhead=1.5,
)
def model_stock(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: ModelStockParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``t · mean(x_i) + (1 − t) · base``, t from the mean pairwise cosine of the offsets."""
    if base is None or len(inputs) < 2:
        raise MergeComputationError(
            "model_stock needs a base model and at least two other models; got "
            f"{'a' if base is not None else 'no'} base and {len(inputs)} other model(s)"
        )
    offsets = [x - base for x in inputs]
    filter_wise = params.filter_wise and base.dim() > 0
    t = interpolation_ratio(offsets, filter_wise)
    mean_offset = offsets[0]
    for d in offsets[1:]:
        mean_offset.add_(d)
    del offsets
    mean_offset.div_(len(inputs))  # mean(x_i) − base
    if filter_wise:
        mean_offset = mean_offset.reshape(-1, base.shape[-1]).mul_(t).reshape(base.shape)
    else:
        mean_offset.mul_(t)
    return mean_offset.add_(base)  # base + t·(mean − base) = t·mean + (1 − t)·base
