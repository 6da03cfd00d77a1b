"""The task-vector methods over row chunks: the accelerator of task_arithmetic, TIES, DARE and
Breadcrumbs (their definitions are the whole-tensor functions in ``alloy.methods``).

Everything after the sparsifier is elementwise, and so is DARE's random drop (its draws are a
function of the element's flat index, `alloy.kernels.random`). TIES and Breadcrumbs keep
magnitude ranks of the whole tensor: their thresholds come first, from a sampling pass and a
counting pass (`alloy.methods.streamed.select`), after which they are elementwise too. On the
CPU one fused kernel (`alloy.kernels.fused.merge.gta_apply`) does the whole per-element
pipeline; elsewhere each chunk goes through the same torch steps as the whole-tensor
functions (`alloy.methods.task_vectors.combine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch

from alloy.errors import MergeComputationError
from alloy.kernels import as_array
from alloy.kernels.random import draws32, keep_threshold
from alloy.methods.sparsify import magnitude_keep_count, outlier_counts
from alloy.methods.streamed.select import Cut, StreamingTopK, add_group_counts, bracket_groups
from alloy.methods.streamed.stream import (
    Chunk,
    StreamFactory,
    TensorContext,
    kernel_dtypes,
    kernel_out_dtype,
)
from alloy.methods.task_vectors import (
    L1_EPS,
    combine,
    input_key,
    task_vectors,
    weight_divisor,
)

Sparsifier = Literal["none", "magnitude", "dare", "breadcrumbs"]


@dataclass(frozen=True)
class Family:
    """How one method of the family sparsifies and combines."""

    sparsify: Sparsifier
    elect: bool
    method: str


class TaskVectorStream:
    """The pipeline over row chunks: `alloy.methods.streamed.stream.StreamedMerge`."""

    def __init__(
        self, ctx: TensorContext, params: Any, model_params: Sequence[Any], family: Family
    ) -> None:
        self.ctx, self.params, self.family = ctx, params, family
        self.model_params = list(model_params)
        self.weights = [float(p.weight) for p in self.model_params]
        n = ctx.numel
        self.scales = [1.0] * len(self.model_params)
        self.keys = [input_key(ctx.key, i) for i in range(len(self.model_params))]
        self.thresholds = [1 << 32] * len(self.model_params)  # DARE: keep if draw < threshold
        self.selectors: dict[int, StreamingTopK] = {}
        self.cuts: list[tuple[Cut, Cut | None] | None] = [None] * len(self.model_params)
        for i, p in enumerate(self.model_params):
            if family.sparsify == "none" or p.density >= 1:
                continue  # every sparsifier keeps everything at density 1
            if family.sparsify == "magnitude":
                self.selectors[i] = StreamingTopK(n, [magnitude_keep_count(n, p.density)])
            elif family.sparsify == "breadcrumbs":
                top, kept = outlier_counts(n, p.density, p.gamma)
                self.selectors[i] = StreamingTopK(n, [top + kept, top])
            elif family.sparsify == "dare":
                # as alloy.methods.dare.dare_drop
                self.thresholds[i] = keep_threshold(p.density)
                if params.rescale and p.density > 0:
                    self.scales[i] = 1.0 / p.density
        self._stage = "start"

    # -- reduction passes: the magnitude cuts ---------------------------------------------------
    def next_pass(self) -> bool:
        if self._stage == "start":
            self._stage = "sample" if self.selectors else "apply"
        elif self._stage == "sample":
            for sel in self.selectors.values():
                sel.end_sampling()
            self._stage = "count"
        elif self._stage == "count":
            for sel in self.selectors.values():
                if not sel.done:
                    sel.end_count()
        if self._stage == "count" and all(s.done for s in self.selectors.values()):
            self._finish_cuts()
            self._stage = "apply"
        return self._stage != "apply"

    def _finish_cuts(self) -> None:
        for i, sel in self.selectors.items():
            cuts = sel.cuts
            keep, top = cuts[0], (cuts[1] if len(cuts) > 1 and cuts[1].k > 0 else None)
            self.cuts[i] = (keep, top)
            if self.params.rescale:  # match the L1 norm of what was kept to the task vector's
                kept = keep.kept_sum - (top.kept_sum if top is not None else 0.0)
                if keep.total_sum >= L1_EPS and kept >= L1_EPS:
                    self.scales[i] = keep.total_sum / kept

    def observe(self, chunk: Chunk) -> None:
        base = _require_base(chunk, self.family.method)
        for i, sel in self.selectors.items():
            x = chunk.raw_inputs[i]
            if self._stage == "sample":
                sample_magnitudes(sel, x, base, chunk.start)
            elif self._kernel_ready(chunk):
                count_brackets(sel, x, base, chunk.start, self.params.rescale)
            else:
                sel.count((chunk.inputs[i] - chunk.base).abs(), chunk.start)  # type: ignore[operator]

    # -- the elementwise pipeline ---------------------------------------------------------------
    def apply(self, chunk: Chunk) -> torch.Tensor:
        _require_base(chunk, self.family.method)
        if not self.model_params:
            return chunk.base.clone()  # type: ignore[union-attr]
        if self._kernel_ready(chunk):
            return self._apply_kernel(chunk)
        return self._apply_torch(chunk)

    def _kernel_ready(self, chunk: Chunk) -> bool:
        return self.ctx.kernels and kernel_dtypes([*chunk.raw_inputs, chunk.raw_base])

    def _apply_torch(self, chunk: Chunk) -> torch.Tensor:
        base, deltas = task_vectors(chunk.inputs, chunk.base, self.model_params, self.family.method)
        for i, delta in enumerate(deltas):  # δ_i, a view of the stack
            self._sparsify(i, delta, chunk)  # δ̂_i, in place
        return combine(base, deltas, self.scales, self.weights, self.params, self.family.elect)

    def _sparsify(self, i: int, delta: torch.Tensor, chunk: Chunk) -> None:
        """δ_i ← sparsify(δ_i), in place, for the chunk's elements."""
        sparsify, p = self.family.sparsify, self.model_params[i]
        if sparsify == "none" or p.density >= 1:
            return
        if sparsify == "dare":
            draws = draws32(self.keys[i], chunk.start, delta.numel(), delta.device)
            delta.mul_((draws < self.thresholds[i]).view(delta.shape))
        else:
            cuts = self.cuts[i]
            assert cuts is not None
            keep, top = cuts
            magnitude = delta.abs()
            mask = keep.mask(magnitude, chunk.start)
            if top is not None:
                mask &= ~top.mask(magnitude, chunk.start)
            delta.mul_(mask)

    def _apply_kernel(self, chunk: Chunk) -> torch.Tensor:
        from alloy.kernels.fused import merge as cpu

        n = len(self.model_params)
        mode = {
            "none": cpu.MODE_NONE,
            "magnitude": cpu.MODE_TOP,
            "breadcrumbs": cpu.MODE_WINDOW,
            "dare": cpu.MODE_DARE,
        }[self.family.sparsify]
        tau = np.full(n, -np.inf, np.float32)  # no cut: keep all
        cut = np.full(n, -1, np.int64)
        tau_top = np.full(n, np.inf, np.float32)  # no top cut: exclude none
        cut_top = np.full(n, -1, np.int64)
        for i, cuts in enumerate(self.cuts):
            if cuts is not None:
                keep, top = cuts
                tau[i], cut[i] = keep.tau, keep.cutoff
                if top is not None:
                    tau_top[i], cut_top[i] = top.tau, top.cutoff
        out = torch.empty(chunk.numel, dtype=kernel_out_dtype(self.ctx))
        # the distance sums ride along when the kernel writes the stored values themselves
        measure = out.dtype == self.ctx.out_dtype
        dist = np.zeros(n + 2 if measure else 0, np.float64)
        cpu.gta_apply(
            tuple(as_array(x) for x in chunk.raw_inputs),
            as_array(chunk.raw_base),  # type: ignore[arg-type]
            chunk.start,
            mode,
            np.array(self.weights, np.float32),
            np.array(self.scales, np.float32),
            tau,
            cut,
            tau_top,
            cut_top,
            np.array(self.keys, np.uint64),
            np.array(self.thresholds, np.uint64),
            self.family.elect,
            bool(self.params.normalize),
            np.float32(weight_divisor(self.weights)),
            np.float32(self.params.lambda_),
            as_array(out),
            dist,
        )
        if measure:
            chunk.distance = (float(dist[n]), [float(v) for v in dist[:n]], float(dist[n + 1]))
        return out.view(chunk.raw_inputs[0].shape)


def count_brackets(
    sel: StreamingTopK, x: torch.Tensor, base: torch.Tensor, start: int, sums: bool
) -> None:
    """One count pass of ``sel`` over a chunk of ``|x − base|`` (raw CPU tensors), every open
    bracket at once, with the fused kernel."""
    from alloy.kernels.fused import merge as cpu

    open_ = sel.open_brackets()
    if not open_:
        return
    xa, ba = as_array(x), as_array(base)
    lo = np.array([b[1] for b in open_], np.float32)
    hi = np.array([b[2] for b in open_], np.float32)
    glo, ghi, groups = bracket_groups(open_)
    # a row per group, one longer than the chunk (pages are touched only as they fill)
    where = np.empty((len(groups), xa.shape[0] + 1), np.int64)
    wmag = np.empty((len(groups), xa.shape[0] + 1), np.float32)
    above, above_sum, total, found = cpu.bracket(xa, ba, start, lo, hi, glo, ghi, sums, where, wmag)
    empty = np.empty(0, np.float32)
    for k, (search, _, _) in enumerate(open_):
        total_k = float(total) if k == 0 else None
        sel.add_counts(search, int(above[k]), float(above_sum[k]), total_k, empty, empty)
    add_group_counts(sel, groups, where, wmag, found)


def sample_magnitudes(sel: StreamingTopK, x: torch.Tensor, base: torch.Tensor, start: int) -> None:
    """The sampling pass of ``sel`` over a chunk of ``|x − base|`` (raw CPU tensors)."""
    part = sel.sample_slice(start)
    sel.add_sample(np.abs(_floats(x, part) - _floats(base, part)))


def _floats(t: torch.Tensor, part: slice) -> np.ndarray:
    """Elements ``part`` of the flattened CPU tensor ``t`` as float32 numpy (bfloat16 widened)."""
    flat = t.reshape(-1)[part]
    if flat.dtype == torch.bfloat16:
        bits = flat.view(torch.int16).numpy().view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    return flat.to(torch.float32).numpy()


def _require_base(chunk: Chunk, method: str) -> torch.Tensor:
    if chunk.raw_base is None:
        raise MergeComputationError(f"{method} merges task vectors and needs a base model")
    return chunk.raw_base


def family_accelerator(sparsify: Sparsifier, *, elect: bool, method: str) -> StreamFactory:
    """The streamed merge of one method of the family: ``sparsify``, and TIES's election if
    ``elect``."""
    return partial(TaskVectorStream, family=Family(sparsify, elect, method))
