"""Reading the aligned rows of a token-indexed tensor (`alloy.plan.vocab.RowMap`), chunk by chunk.

The rows a chunk needs are gathered from the sources in runs of nearby ids (one positioned read
per run, at most twice the rows wanted), so a permuted vocabulary costs reads, not a copy of
the matrix. A fill row is the
float32 mean of its members' rows, summed in member order (as mergekit sums them); the padding
rows are the mean of the input's aligned token rows, computed once per input in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from alloy.config.schema import ModelRef
from alloy.io.sources import TensorSource
from alloy.plan.vocab import RowMap

GAP = 32  # ids at most this far apart are read in one run, if it stays half dense
MEAN_ROWS_BUDGET = 4 * 1024 * 1024  # elements per chunk when averaging for the padding rows


def gather(source: TensorSource, name: str, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` (int64, any order, >= 0) of tensor ``name`` of ``source``."""
    info = source.info(name)
    if ids.numel() == 0:
        return torch.empty((0, *info.shape[1:]), dtype=info.dtype)
    uniq, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    values = uniq.tolist()
    parts: list[torch.Tensor] = []
    start = prev = values[0]
    count = 1
    for v in values[1:]:
        # a run reads at most twice the rows it wants: memory stays near the chunk's
        if v - prev > GAP or v - start + 1 > 2 * (count + 1):
            parts.append(_run(source, name, start, prev, uniq))
            start, count = v, 0
        prev = v
        count += 1
    parts.append(_run(source, name, start, prev, uniq))
    return torch.cat(parts)[inverse]


def _run(source: TensorSource, name: str, lo: int, hi: int, uniq: torch.Tensor) -> torch.Tensor:
    """The rows of ``uniq`` inside [lo, hi], read as one range."""
    block = source.get(name, (lo, hi + 1))
    wanted = uniq[(uniq >= lo) & (uniq <= hi)] - lo
    return block[wanted]


class AlignedReader:
    """Reads aligned rows from ``sources`` (one per model); keeps each input's padding mean."""

    def __init__(self, sources: Mapping[ModelRef, TensorSource]) -> None:
        self.sources = sources
        self._means: dict[int, torch.Tensor] = {}

    def read(self, rm: RowMap, rows: tuple[int, int] | None) -> torch.Tensor:
        a, b = rows if rows is not None else (0, rm.own.shape[0])
        info = self.sources[rm.model].info(rm.name)
        out = torch.zeros((b - a, *info.shape[1:]), dtype=info.dtype)
        own = rm.own[a:b]
        mine = (own >= 0).nonzero().flatten()
        if mine.numel():
            out[mine] = gather(self.sources[rm.model], rm.name, own[mine])
        fill = self._fill_rows(rm, a, min(b, rm.tokens))
        if fill is not None:
            at, values = fill
            out[at - a] = values.to(info.dtype)
        if b > rm.tokens:
            out[max(a, rm.tokens) - a :] = self._mean(rm).to(info.dtype)
        return out

    def _fill_rows(self, rm: RowMap, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fill rows of [a, b) for ``rm`` (those where its own row is not used)."""
        if b <= a:
            return None
        f = rm.fills
        lo, hi = torch.searchsorted(f.rows, torch.tensor([a, b])).tolist()
        rows, ids = f.rows[lo:hi], f.ids[lo:hi]
        keep = rm.own[rows] < 0
        rows, ids = rows[keep], ids[keep]
        if rows.numel() == 0:
            return None
        total: torch.Tensor | None = None
        used = torch.zeros(rows.shape[0], dtype=torch.float32)
        for j, (model, name) in enumerate(f.members):
            col = ids[:, j]
            has = (col >= 0).nonzero().flatten()
            if total is None:
                shape = self.sources[model].info(name).shape[1:]
                total = torch.zeros((rows.shape[0], *shape), dtype=torch.float32)
            if has.numel():
                total[has] = total[has] + gather(self.sources[model], name, col[has]).float()
                used[has] += 1
        assert total is not None
        scale = used.clamp(min=1).reshape(-1, *([1] * (total.dim() - 1)))
        return rows, total / scale

    def _mean(self, rm: RowMap) -> torch.Tensor:
        """The mean of ``rm``'s aligned token rows (the value of every padding row)."""
        key = id(rm)
        if key not in self._means:
            info = self.sources[rm.model].info(rm.name)
            per_row = math.prod(info.shape[1:]) or 1
            step = max(1, MEAN_ROWS_BUDGET // per_row)
            total = torch.zeros(info.shape[1:], dtype=torch.float64)
            for start in range(0, rm.tokens, step):
                part = self.read(rm, (start, min(start + step, rm.tokens)))
                total += part.double().sum(0)
            self._means[key] = (total / rm.tokens).float()
        return self._means[key]
