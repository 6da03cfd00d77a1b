"""Streamed merges: a method computed over row chunks, after reduction passes if it needs them.

Most merge methods are elementwise once a few statistics of the whole tensor are known: TIES
once each task vector's top-k threshold is known, SLERP once the angle between the tensors is,
DARE and task arithmetic right away. A method that says so registers a `StreamFactory`; the
executor then feeds it the tensor in row chunks (bounded memory, cache-sized work) instead of
whole::

    stream = factory(ctx, params, model_params)
    while stream.next_pass():            # reduction passes (none for elementwise methods)
        for chunk in chunks: stream.observe(chunk)
    for chunk in chunks:                 # in order; the outputs are the tensor's rows
        write(stream.apply(chunk))

A factory is an accelerator: the method's definition is its whole-tensor function (``fn`` in
the registry), and the tests check that the factory gives the same result chunk by chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class TensorContext:
    """What a streamed merge knows about the tensor it merges, besides its parameters."""

    shape: tuple[int, ...]
    key: int  # root of the tensor's random streams (from the seed and the tensor name)
    device: torch.device
    out_dtype: torch.dtype  # apply() may return this dtype directly (else float32)
    kernels: bool  # use the fused CPU kernels (alloy.kernels.fused)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Chunk:
    """Consecutive rows of every input of one tensor: ``raw`` as stored in the checkpoints (on
    the CPU), ``inputs`` / ``base`` as float32 on the compute device (converted on first use)."""

    def __init__(
        self,
        raw_inputs: Sequence[torch.Tensor],
        raw_base: torch.Tensor | None,
        start: int,
        index: int,
        device: torch.device,
    ) -> None:
        self.raw_inputs = list(raw_inputs)
        self.raw_base = raw_base
        self.start = start  # flat index of the chunk's first element in the tensor
        self.index = index  # position of the chunk in the tensor
        self.device = device
        # the merge report's distance sums of the merged chunk as written, when the kernel
        # that merged it measured them: (Σ (merged − base)², [Σ (x_i − base)²], Σ base²)
        self.distance: tuple[float, list[float], float] | None = None

    @property
    def numel(self) -> int:
        ref = self.raw_base if self.raw_base is not None else self.raw_inputs[0]
        return ref.numel()

    def _f32(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, dtype=torch.float32)

    @cached_property
    def inputs(self) -> list[torch.Tensor]:
        return [self._f32(t) for t in self.raw_inputs]

    @cached_property
    def base(self) -> torch.Tensor | None:
        return None if self.raw_base is None else self._f32(self.raw_base)


KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def kernel_dtypes(tensors: Sequence[torch.Tensor | None]) -> bool:
    """The fused CPU kernels take these tensors: all present, of one dtype they read."""
    first = tensors[0] if tensors else None
    return (
        first is not None
        and first.dtype in KERNEL_DTYPES
        and all(t is not None and t.dtype == first.dtype for t in tensors)
    )


def kernel_out_dtype(ctx: TensorContext) -> torch.dtype:
    """The dtype a kernel writes: the output's when the kernels can write it, else float32."""
    return ctx.out_dtype if ctx.out_dtype in KERNEL_DTYPES else torch.float32


class StreamedMerge(Protocol):
    """One tensor's merge, fed chunks; see the module docstring for the calling order."""

    def next_pass(self) -> bool:
        """Finish the previous reduction pass (if any); True if another pass is needed."""
        ...

    def observe(self, chunk: Chunk) -> None:
        """Accumulate statistics of one chunk, in a reduction pass."""
        ...

    def apply(self, chunk: Chunk) -> torch.Tensor:
        """The merged rows of one chunk (float32, or ``ctx.out_dtype``); chunks come in order."""
        ...


class StreamFactory(Protocol):
    def __call__(
        self, ctx: TensorContext, params: Any, model_params: Sequence[Any]
    ) -> StreamedMerge: ...
