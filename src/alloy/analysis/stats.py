"""Statistics of task vectors (fine-tune minus base), one tensor at a time, as additive sums.

For a tensor with base ``W`` and fine-tunes ``W_i``, ``δ_i = W_i − W`` (float32). The sums:

- ``Σ W²``, ``Σ δ_i²``, ``Σ δ_i·δ_j`` for every pair: norms, relative sizes, cosines;
- the number of entries with ``δ_i ≠ 0`` (the fraction changed);
- the energy ``Σ δ²`` of the top 10% and top 50% entries of ``|δ_i|`` (per-tensor top-k, as
  TIES trims): how concentrated each task vector is;
- at a TIES density ``d``: the entries where at least two task vectors keep a nonzero entry
  (``overlap``) and those among them where the kept signs disagree (``conflict``).

Without a base, the sums are those of the weights themselves: ``Σ W_i²`` and ``Σ W_i·W_j``
(SLERP's geometry: cosine and angle between the models).

Sums add across tensors, so a layer, a module kind or the whole model aggregates by adding:
its cosine is that of the concatenated vectors, its conflict rate that of all its coordinates.
Tensors are processed in pieces of `CHUNK` entries (float32 working copies of one piece per
model); the top-k uses `alloy.analysis.topk`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import torch

from alloy.analysis.topk import (
    NOTHING,
    Cut,
    Histogram,
    bf16_bits,
    kept_nonzero,
    locate,
    magnitude_key,
    make_cut,
    signed_kept,
)
from alloy.errors import CheckpointError

CHUNK = 1 << 18  # entries per piece: its float32 working copies stay in a core's cache
HIST_BATCH = 4  # pieces per histogram update
CONCENTRATION = (0.1, 0.5)  # top shares whose energy is measured


def pairs(n: int) -> list[tuple[int, int]]:
    return list(combinations(range(n), 2))


@dataclass
class Sums:
    """Additive statistics of a group of tensors for ``n`` models (see the module docstring)."""

    n: int
    numel: float = 0.0
    tensors: int = 0
    base_sq: float = 0.0
    sq: list[float] = field(default_factory=list)
    dot: list[float] = field(default_factory=list)  # in the order of pairs(n)
    changed: list[float] = field(default_factory=list)
    top10: list[float] = field(default_factory=list)
    top50: list[float] = field(default_factory=list)
    overlap: float = 0.0
    conflict: float = 0.0

    def __post_init__(self) -> None:
        for name, size in (("sq", self.n), ("dot", len(pairs(self.n))), ("changed", self.n)):
            if not getattr(self, name):
                setattr(self, name, [0.0] * size)
        for name in ("top10", "top50"):
            if not getattr(self, name):
                setattr(self, name, [0.0] * self.n)

    def add(self, other: Sums) -> None:
        self.numel += other.numel
        self.tensors += other.tensors
        self.base_sq += other.base_sq
        self.overlap += other.overlap
        self.conflict += other.conflict
        for name in ("sq", "dot", "changed", "top10", "top50"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for i, v in enumerate(theirs):
                mine[i] += v

    def scaled(self, factor: float) -> Sums:
        """Every sum times ``factor`` (a sampled tensor's estimate of its full sums)."""
        return Sums(
            self.n,
            self.numel * factor,
            self.tensors,
            self.base_sq * factor,
            [v * factor for v in self.sq],
            [v * factor for v in self.dot],
            [v * factor for v in self.changed],
            [v * factor for v in self.top10],
            [v * factor for v in self.top50],
            self.overlap * factor,
            self.conflict * factor,
        )

    def metrics(self, has_base: bool) -> dict[str, Any]:
        """Ratios of the sums: norms, relative norms, cosines, angles, shares."""
        norms = [math.sqrt(v) for v in self.sq]
        base_norm = math.sqrt(self.base_sq)
        cos = []
        for (i, j), d in zip(pairs(self.n), self.dot):
            den = norms[i] * norms[j]
            cos.append(d / den if den > 0 else None)
        out: dict[str, Any] = {
            "tensors": self.tensors,
            "numel": self.numel,
            "norm": norms,
            "cosine": cos,
            "angle_deg": [
                None if c is None else math.degrees(math.acos(max(-1.0, min(1.0, c)))) for c in cos
            ],
        }
        if has_base:
            out["base_norm"] = base_norm
            out["relative_norm"] = [v / base_norm if base_norm > 0 else None for v in norms]
            out["changed"] = [c / self.numel if self.numel else None for c in self.changed]
            out["top10_energy"] = [t / s if s > 0 else None for t, s in zip(self.top10, self.sq)]
            out["top50_energy"] = [t / s if s > 0 else None for t, s in zip(self.top50, self.sq)]
            out["conflict"] = self.conflict / self.overlap if self.overlap else None
            out["overlap"] = self.overlap / self.numel if self.numel else None
        return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b))


def _label(labels: Sequence[str] | None, i: int) -> str:
    return labels[i] if labels is not None else f"model {i + 1}"


def weight_sums(models: list[torch.Tensor], labels: Sequence[str] | None = None) -> Sums:
    """Sums of the weights themselves (no base): norms and pairwise dot products."""
    n = len(models)
    out = Sums(n, float(models[0].numel()), 1)
    flat = [m.reshape(-1) for m in models]
    total = flat[0].numel()
    for start in range(0, total, CHUNK):
        w = [f[start : start + CHUNK].to(torch.float32) for f in flat]
        for i in range(n):
            out.sq[i] += _dot(w[i], w[i])
        for p, (i, j) in enumerate(pairs(n)):
            out.dot[p] += _dot(w[i], w[j])
    for i, v in enumerate(out.sq):
        if not math.isfinite(v):
            raise CheckpointError(f"{_label(labels, i)} holds NaN or Inf values")
    return out


@dataclass
class _Model:
    """Per-model state while one tensor is processed."""

    flat: torch.Tensor  # the fine-tune's tensor, flat, as read
    bits: np.ndarray  # bf16_bits of δ (int16), the whole tensor
    hist: Histogram
    nonzero: int = 0


def task_vector_sums(
    base: torch.Tensor,
    models: list[torch.Tensor],
    density: float,
    labels: Sequence[str] | None = None,
) -> Sums:
    """Sums of the task vectors ``models[i] − base`` of one tensor (any float dtypes, one
    shape). Exact: top-k cuts from `alloy.analysis.topk`, sums of squares per piece in float32
    and across pieces in float64."""
    n = len(models)
    b = base.reshape(-1)
    total = b.numel()
    out = Sums(n, float(total), 1)
    wide = any(t.dtype.itemsize > 2 for t in (base, *models))  # 16-bit inputs: key 0 <=> δ = 0
    state = [
        _Model(m.reshape(-1), np.empty(total, dtype=np.int16), Histogram.empty()) for m in models
    ]
    piece = min(CHUNK, total)
    batch = min(HIST_BATCH * piece, total)  # entries per histogram update
    b32 = torch.empty(piece)
    ds = [torch.empty(piece) for _ in models]
    keys = [np.empty(batch, dtype=np.int16) for _ in models]
    squares = [torch.empty(batch) for _ in models]
    filled = 0
    for start in range(0, total, piece):
        end = min(start + piece, total)
        size = end - start
        bp = b32[:size].copy_(b[start:end])
        out.base_sq += _dot(bp, bp)
        for s, d, k, sq in zip(state, ds, keys, squares):
            dp = d[:size].copy_(s.flat[start:end]).sub_(bp)
            bits = bf16_bits(dp, out=s.bits[start:end])
            magnitude_key(bits, out=k[filled : filled + size])
            torch.mul(dp, dp, out=sq[filled : filled + size])
            if wide:
                s.nonzero += int(torch.count_nonzero(dp))
        for p, (i, j) in enumerate(pairs(n)):
            out.dot[p] += _dot(ds[i][:size], ds[j][:size])
        filled += size
        if filled == batch or end == total:
            for s, k, sq in zip(state, keys, squares):
                s.hist.add(k[:filled], sq[:filled])
            filled = 0
    for i, s in enumerate(state):
        if s.hist.nonfinite:
            raise CheckpointError(
                f"the task vector of {_label(labels, i)} has {s.hist.nonfinite} NaN/Inf "
                f"entries (or the base has); check the checkpoints"
            )
        out.changed[i] = float(s.nonzero if wide else total - int(s.hist.counts[0]))
        out.sq[i] = float(s.hist.energy.sum())  # Σ δ², from the energy histogram
    cuts = [_cuts(s, b, (*CONCENTRATION, density)) for s in state]
    for i, c in enumerate(cuts):
        out.top10[i], out.top50[i] = c[0].energy, c[1].energy
    if n >= 2:
        out.overlap, out.conflict = _conflicts(state, [c[2] for c in cuts])
    return out


def _cuts(s: _Model, base: torch.Tensor, densities: tuple[float, ...]) -> list[Cut]:
    """The cut at each density. The entries of the buckets the cuts fall in are found in one
    pass over the keys, and their exact δ recomputed from the inputs."""
    wanted = sorted({locate(s.hist, d)[1] for d in densities} - {NOTHING})
    found: list[np.ndarray] = []
    total = s.bits.size
    for start in range(0, total, CHUNK):
        key = magnitude_key(s.bits[start : start + CHUNK])
        if not wanted:
            continue
        mask = key == wanted[0]
        for bucket in wanted[1:]:
            mask |= key == bucket
        found.append(np.flatnonzero(mask) + start)
    idx = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    delta = _gather(s.flat, idx) - _gather(base, idx)
    values, keys = delta.numpy(), magnitude_key(bf16_bits(delta))  # the same keys as s.bits
    cuts: dict[float, Cut] = {}
    for d in densities:
        if d not in cuts:
            in_bucket = keys == locate(s.hist, d)[1]
            cuts[d] = make_cut(s.hist, d, torch.from_numpy(values[in_bucket]), idx[in_bucket])
    return [cuts[d] for d in densities]


def _gather(flat: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """``flat[idx]`` as float32 (2-byte dtypes gathered through numpy, which is faster)."""
    if flat.dtype.itemsize == 2:
        raw = flat.view(torch.int16).numpy()[idx]
        return torch.from_numpy(raw).view(flat.dtype).to(torch.float32)
    return flat[torch.from_numpy(idx)].to(torch.float32)


def _conflicts(state: list[_Model], cuts: list[Cut]) -> tuple[float, float]:
    """(entries kept nonzero by two or more models, those among them with both signs)."""
    total = state[0].bits.size
    overlap = conflict = 0
    for start in range(0, total, CHUNK):
        end = min(start + CHUNK, total)
        if len(state) == 2:  # the common case: kept by both, and the sign bits differ
            a, b = (s.bits[start:end] for s in state)
            both = kept_nonzero(a, cuts[0], start) & kept_nonzero(b, cuts[1], start)
            overlap += int(np.count_nonzero(both))
            conflict += int(np.count_nonzero(both & (np.bitwise_xor(a, b) < 0)))
            continue
        any_pos = np.zeros(end - start, dtype=bool)
        any_neg = np.zeros(end - start, dtype=bool)
        count = np.zeros(end - start, dtype=np.uint8)
        for s, c in zip(state, cuts):
            pos, neg = signed_kept(s.bits[start:end], c, start)
            any_pos |= pos
            any_neg |= neg
            count += pos | neg
        overlap += int(np.count_nonzero(count >= 2))
        conflict += int(np.count_nonzero(any_pos & any_neg))
    return float(overlap), float(conflict)
