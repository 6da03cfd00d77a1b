"""Linear merge (model soups): a weighted average of the input tensors.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time", arXiv 2203.05482::

    merged = Σ_i w_i · x_i            (normalize=False)
    merged = Σ_i w_i · x_i / Σ_i w_i  (normalize=True, the default)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alloy.errors import MergeComputationError
from alloy.kernels import as_array
from alloy.methods.registry import Params, method
from alloy.methods.stream import Chunk, TensorContext, kernel_dtypes, kernel_out_dtype, run_whole


class LinearParams(Params):
    normalize: bool = True  # divide by the sum of the weights


class LinearModelParams(Params):
    weight: float


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


def combine(
    chunk: Chunk, ctx: TensorContext, weights: Sequence[float], divisor: float
) -> torch.Tensor:
    """``Σ_i w_i·x_i / divisor`` over the chunk's inputs, summed in input order (the fused CPU
    kernel when it applies, else torch on the chunk's device)."""
    if ctx.kernels and kernel_dtypes(chunk.raw_inputs):
        from alloy.kernels.cpu import linear_apply

        out = torch.empty(chunk.numel, dtype=kernel_out_dtype(ctx))
        linear_apply(
            tuple(as_array(x) for x in chunk.raw_inputs),
            np.array(weights, np.float32),
            np.float32(divisor),
            as_array(out),
        )
        return out.view(chunk.raw_inputs[0].shape)
    inputs = chunk.inputs
    merged = torch.mul(inputs[0], weights[0])
    for x, w in zip(inputs[1:], weights[1:], strict=True):
        merged.add_(torch.mul(x, w))  # Σ w_i·x_i, each product rounded (no fused multiply-add)
    return merged.div_(divisor) if divisor != 1.0 else merged


class LinearStream:
    """`linear` over row chunks: elementwise, no reduction pass."""

    def __init__(self, ctx: TensorContext, params: LinearParams, model_params: Sequence[Any]):
        self.ctx = ctx
        self.weights = [p.weight for p in model_params]
        # Deliberate: a zero weight sum is an error here; mergekit divides by it (inf/NaN).
        self.divisor = weight_sum(self.weights, "linear") if params.normalize else 1.0

    def next_pass(self) -> bool:
        return False

    def observe(self, chunk: Chunk) -> None:  # pragma: no cover - no reduction pass
        raise AssertionError("linear makes no reduction pass")

    def apply(self, chunk: Chunk) -> torch.Tensor:
        if not chunk.raw_inputs:
            raise MergeComputationError("linear needs at least one input tensor")
        return combine(chunk, self.ctx, self.weights, self.divisor)


@method(
    "linear",
    params=LinearParams,
    model_params=LinearModelParams,
    base="none",
    min_models=1,
    paper="Wortsman et al. 2022, Model soups (arXiv 2203.05482)",
    summary="Weighted average Σ w_i·x_i (divided by Σ w_i when normalize is true).",
    streamed=LinearStream,
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
    return run_whole(LinearStream, inputs, None, params, model_params, generator)
