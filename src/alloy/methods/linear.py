"""Linear merge (model soups): a weighted average of the input tensors.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time", arXiv 2203.05482::

    merged = Σ_i w_i · x_i            (normalize=False)
    merged = Σ_i w_i · x_i / Σ_i w_i  (normalize=True, the default)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alloy.errors import MergeComputationError
from alloy.methods.bounds import Scale
from alloy.methods.registry import Params, method


class LinearParams(Params):
    normalize: bool = True  # divide by the sum of the weights


class LinearModelParams(Params):
    weight: Scale


def weight_sum(weights: Sequence[float], method: str) -> float:
    """Σ w_i, refusing a sum that is zero relative to the weights (dividing by it gives inf/NaN)."""
    total = math.fsum(weights)
    scale = math.fsum(abs(w) for w in weights)
    if abs(total) <= 1e-6 * scale:  # also all-zero weights
        raise MergeComputationError(
            f"{method}: the weights {list(weights)} sum to {total:g}, so normalizing by their sum "
            "divides by zero; change the weights or set `normalize: false`"
        )
    return total


def weighted_sum(
    inputs: Sequence[torch.Tensor], weights: Sequence[float], divisor: float
) -> torch.Tensor:
    """``Σ_i w_i·x_i / divisor``, summed in input order, each product rounded (no fused
    multiply-add): the order the fused CPU kernel keeps."""
    merged = torch.mul(inputs[0], weights[0])
    for x, w in zip(inputs[1:], weights[1:], strict=True):
        merged.add_(torch.mul(x, w))
    return merged.div_(divisor) if divisor != 1.0 else merged


from alloy.methods.streamed.linear import LinearStream  # noqa: E402


@method(
    "linear",
    params=LinearParams,
    model_params=LinearModelParams,
    base="none",
    min_models=1,
    paper="Wortsman et al. 2022, Model soups (arXiv 2203.05482)",
    summary="Weighted average Σ w_i·x_i (divided by Σ w_i when normalize is true).",
    feeding="rows",
    accelerator=LinearStream,
    overhead=1.0,
)
def linear(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: LinearParams,
    model_params: Sequence[LinearModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``Σ w_i·x_i``, divided by ``Σ w_i`` if ``normalize``. A base model is an ordinary input."""
    if not inputs:
        raise MergeComputationError("linear needs at least one input tensor")
    weights = [p.weight for p in model_params]
    # Deliberate: a zero weight sum is an error here; mergekit divides by it (inf/NaN).
    divisor = weight_sum(weights, "linear") if params.normalize else 1.0
    return weighted_sum(inputs, weights, divisor)
