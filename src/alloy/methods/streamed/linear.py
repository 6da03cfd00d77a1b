"""`linear` over row chunks: elementwise, no reduction pass; the fused CPU kernel where it
applies. Also the chunk combination SLERP's accelerator applies once its angle is known."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alloy.errors import MergeComputationError
from alloy.kernels import as_array
from alloy.methods.streamed.stream import Chunk, TensorContext, kernel_dtypes, kernel_out_dtype


def combine(
    chunk: Chunk, ctx: TensorContext, weights: Sequence[float], divisor: float
) -> torch.Tensor:
    """``Σ_i w_i·x_i / divisor`` over the chunk's inputs, summed in input order (the fused CPU
    kernel when it applies, else torch on the chunk's device)."""
    if ctx.kernels and kernel_dtypes(chunk.raw_inputs):
        from alloy.kernels.fused.merge import linear_apply

        out = torch.empty(chunk.numel, dtype=kernel_out_dtype(ctx))
        linear_apply(
            tuple(as_array(x) for x in chunk.raw_inputs),
            np.array(weights, np.float32),
            np.float32(divisor),
            as_array(out),
        )
        return out.view(chunk.raw_inputs[0].shape)
    from alloy.methods.linear import weighted_sum

    return weighted_sum(chunk.inputs, weights, divisor)


class LinearStream:
    """`linear` over row chunks: elementwise, no reduction pass."""

    def __init__(self, ctx: TensorContext, params: Any, model_params: Sequence[Any]) -> None:
        from alloy.methods.linear import weight_sum

        self.ctx = ctx
        self.weights = [p.weight for p in model_params]
        # as alloy.methods.linear.linear: a zero weight sum is an error
        self.divisor = weight_sum(self.weights, "linear") if params.normalize else 1.0

    def next_pass(self) -> bool:
        return False

    def observe(self, chunk: Chunk) -> None:  # pragma: no cover - no reduction pass
        raise AssertionError("linear makes no reduction pass")

    def apply(self, chunk: Chunk) -> torch.Tensor:
        if not chunk.raw_inputs:
            raise MergeComputationError("linear needs at least one input tensor")
        return combine(chunk, self.ctx, self.weights, self.divisor)
