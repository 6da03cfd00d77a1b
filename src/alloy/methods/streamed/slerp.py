"""SLERP over row chunks: one reduction pass for the angle, then a weighted sum per chunk
(the accelerator of `alloy.methods.slerp.slerp`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alloy.kernels import as_array
from alloy.methods.streamed.linear import combine
from alloy.methods.streamed.stream import Chunk, TensorContext, kernel_dtypes


class SlerpStream:
    """SLERP over row chunks: one pass sums ‖v0‖², ‖v1‖², ⟨v0, v1⟩ (in float64), then each
    chunk is ``s0·v0 + s1·v1``, the coefficients on the unnormalised tensors."""

    def __init__(self, ctx: TensorContext, params: Any, model_params: Sequence[Any]) -> None:
        self.ctx, self.t = ctx, params.t
        self.sums = [0.0, 0.0, 0.0]
        self.coefficients: tuple[float, float] | None = None
        self._passes = 0

    def next_pass(self) -> bool:
        self._passes += 1
        if self._passes == 1:
            return True
        from alloy.methods.slerp import slerp_coefficients

        self.coefficients = slerp_coefficients(self.t, *self.sums)
        return False

    def _pair(self, chunk: Chunk) -> list[torch.Tensor]:
        from alloy.methods.slerp import slerp_pair

        return list(slerp_pair(chunk.raw_inputs, chunk.raw_base))

    def observe(self, chunk: Chunk) -> None:
        pair = self._pair(chunk)
        if self.ctx.kernels and kernel_dtypes(pair):
            from alloy.kernels.fused.merge import pair_dots

            parts = [float(v) for v in pair_dots(as_array(pair[0]), as_array(pair[1]))]
        else:
            a, b = chunk.base.reshape(-1), chunk.inputs[0].reshape(-1)  # type: ignore[union-attr]
            parts = [float(torch.dot(a, a)), float(torch.dot(b, b)), float(torch.dot(a, b))]
        self.sums = [s + p for s, p in zip(self.sums, parts)]

    def apply(self, chunk: Chunk) -> torch.Tensor:
        pair = self._pair(chunk)
        assert self.coefficients is not None
        both = Chunk(pair, None, chunk.start, chunk.index, chunk.device)
        return combine(both, self.ctx, self.coefficients, 1.0)
