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
Tensors are processed in pieces of `CHUNK` entries; the top-k cuts are TIES' own
(`alloy.methods.streamed.select`, lowest indices first among equal magnitudes), and the sums
come from one fused pass (`alloy.kernels.fused.analysis.task_vector_pass`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import torch

from alloy.errors import CheckpointError
from alloy.kernels import as_array, cpu_kernels_enabled, kernels_for
from alloy.methods.sparsify import magnitude_keep_count
from alloy.methods.streamed.select import (
    Bracket,
    Cut,
    StreamingTopK,
    add_group_counts,
    bracket_groups,
)
from alloy.methods.streamed.stream import kernel_dtypes
from alloy.methods.streamed.task_vectors import sample_magnitudes

CHUNK = 1 << 20  # entries per piece of a tensor
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


def _label(labels: Sequence[str] | None, i: int) -> str:
    return labels[i] if labels is not None else f"model {i + 1}"


def _kernel_ready(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors flat, on the CPU, in one dtype the kernels read (bf16 or float32)."""
    flat = [t.detach().reshape(-1).to("cpu") for t in tensors]
    if kernel_dtypes(flat):
        return flat
    return [t.to(torch.float32) for t in flat]


def weight_sums(models: list[torch.Tensor], labels: Sequence[str] | None = None) -> Sums:
    """Sums of the weights themselves (no base): norms and pairwise dot products (in float64;
    with the fused kernel, or torch for a small tensor: `alloy.kernels.kernels_for`)."""
    n = len(models)
    out = Sums(n, float(models[0].numel()), 1)
    if kernels_for(models[0].numel(), cpu_kernels_enabled()):
        from alloy.kernels.fused.analysis import gram

        g = gram(tuple(as_array(t) for t in _kernel_ready(models))).tolist()
    else:
        x = torch.stack([t.detach().reshape(-1).to("cpu", torch.float64) for t in models])
        g = (x @ x.T).tolist()
    out.sq = [float(g[i][i]) for i in range(n)]
    out.dot = [float(g[i][j]) for i, j in pairs(n)]
    for i, v in enumerate(out.sq):
        if not math.isfinite(v):
            raise CheckpointError(f"{_label(labels, i)} holds NaN or Inf values")
    return out


def task_vector_sums(
    base: torch.Tensor,
    models: list[torch.Tensor],
    density: float,
    labels: Sequence[str] | None = None,
) -> Sums:
    """Sums of the task vectors ``models[i] − base`` of one tensor (any float dtypes, one
    shape), exact. Each task vector's top-k cuts (10%, 50%, ``density``: TIES' kept sets) are
    bracketed by a sample (`alloy.methods.streamed.select`); one fused pass
    (`alloy.kernels.fused.analysis.task_vector_pass`) then sums everything, counts the
    brackets, and counts the sign conflicts wherever the keeps are already certain; the few
    entries inside a bracket are settled once the cuts are known. A bracket that missed costs
    another pass."""
    n = len(models)
    flat = _kernel_ready([*models, base])
    arrays = [as_array(t) for t in flat]
    total = flat[n].numel()
    ks = sorted({magnitude_keep_count(total, d) for d in (*CONCENTRATION, density)})
    dk = ks.index(magnitude_keep_count(total, density))
    selectors = [StreamingTopK(total, ks) for _ in range(n)]
    pieces = [(s, min(s + CHUNK, total)) for s in range(0, total, CHUNK)]
    for i, sel in enumerate(selectors):
        for s, e in pieces:
            sample_magnitudes(sel, flat[i][s:e], flat[n][s:e], s)
        sel.end_sampling()
    while True:
        out = _one_pass(arrays, pieces, selectors, ks, dk, labels)
        if all(sel.done for sel in selectors):
            break
    cuts = [{c.k: c for c in sel.cuts} for sel in selectors]
    for i in range(n):
        out.top10[i], out.top50[i] = (
            _energy(cuts[i][magnitude_keep_count(total, d)], out.sq[i]) for d in CONCENTRATION
        )
    return out


def _end_counts(
    selectors: list[StreamingTopK],
    open_: list[list[tuple[int, float, float]]],
    above: np.ndarray,
    above_sq: np.ndarray,
) -> None:
    """Each selector's counts above its open brackets (``above[i, k]``, and their squares),
    from the pass's totals; the selectors then make their cuts."""
    for i, sel in enumerate(selectors):
        for k, _, _ in open_[i]:
            empty = np.empty(0, np.float32)
            sel.add_counts(
                k,
                int(above[i, k]),
                0.0,
                None,
                empty,
                empty.astype(np.int64),
                above_sq=float(above_sq[i, k]),
            )
        if open_[i]:
            sel.end_count()


def _one_pass(
    arrays: list[np.ndarray],
    pieces: list[tuple[int, int]],
    selectors: list[StreamingTopK],
    ks: list[int],
    dk: int,
    labels: Sequence[str] | None,
) -> Sums:
    """The fused pass over every piece with the selectors' current brackets: the counts go to
    the selectors (and their cuts are made), the sums to the result."""
    from alloy.kernels.fused.analysis import pass_totals, task_vector_pass

    n, nk = len(selectors), len(ks)
    total = arrays[n].shape[0]
    out = Sums(n, float(total), 1)
    lo, hi, glo, ghi, groups = _brackets(selectors, nk, dk)
    totals = pass_totals(n, nk)
    width = max(e - s for s, e in pieces)
    ng = max(nk, 1)  # the kernel's rows per input: one per group (pages touched only as filled)
    where = np.empty((n, ng, width + 1), np.int32)
    wmag = np.empty((n, ng, width + 1), np.float32)
    unsure = np.empty(width + 1, np.int32)
    udelta = np.empty((n, width + 1), np.float32)
    settle: list[tuple[np.ndarray, np.ndarray]] = []
    open_ = [sel.open_brackets() for sel in selectors]
    for s, e in pieces:
        found, nu = task_vector_pass(
            tuple(a[s:e] for a in arrays[:n]),
            arrays[n][s:e],
            lo,
            hi,
            glo,
            ghi,
            dk,
            totals.sums,
            totals.counts,
            where,
            wmag,
            unsure,
            udelta,
        )
        if n >= 2 and nu:
            settle.append((unsure[:nu] + s, udelta[:, :nu].copy()))
        for i, sel in enumerate(selectors):
            add_group_counts(sel, groups[i], where[i], wmag[i], found[i], s)
    _end_counts(selectors, open_, totals.above, totals.above_sq)
    for i in range(n):
        if totals.nonfinite[i]:
            raise CheckpointError(
                f"the task vector of {_label(labels, i)} has {int(totals.nonfinite[i])} NaN/Inf "
                f"entries (or the base has); check the checkpoints"
            )
    out.base_sq = float(totals.base_sq[0])
    out.sq = [float(v) for v in totals.sq]
    out.dot = [float(v) for v in totals.dot]
    out.changed = [float(v) for v in totals.changed]
    if n >= 2 and all(sel.done for sel in selectors):
        overlap, conflict = _settle(settle, [sel.cuts[dk] for sel in selectors])
        out.overlap = float(totals.overlap[0] + overlap)
        out.conflict = float(totals.conflict[0] + conflict)
    return out


def _brackets(
    selectors: list[StreamingTopK], nk: int, dk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[list[list[Bracket]]]]:
    """The kernel's brackets [input, rank], their disjoint groups, and each input's groups'
    open brackets (`alloy.methods.streamed.select.bracket_groups`). A rank whose cut is known is given as the cut itself (everything: ``hi = −inf``;
    nothing: ``lo = hi = +inf``; else ``lo = hi = tau``, so only values equal to tau stay
    uncertain) and is not searched."""
    n = len(selectors)
    lo = np.full((n, nk), np.inf, np.float32)
    hi = np.full((n, nk), np.inf, np.float32)
    glo = np.full((n, nk), np.inf, np.float32)  # unused groups: lo > hi
    ghi = np.full((n, nk), -np.inf, np.float32)
    groups: list[list[list[Bracket]]] = []
    for i, sel in enumerate(selectors):
        for c in sel.cuts_so_far():
            rank, cut = c
            lo[i, rank], hi[i, rank] = (
                (-np.inf, -np.inf) if cut.tau == -math.inf else (cut.tau, cut.tau)
            )
        open_ = sel.open_brackets()
        for k, l_, h_ in open_:
            lo[i, k], hi[i, k] = l_, h_
        gl, gh, mine = bracket_groups(open_)
        glo[i, : len(gl)], ghi[i, : len(gh)] = gl, gh
        groups.append(mine)
    return lo, hi, glo, ghi, groups


def _settle(records: list[tuple[np.ndarray, np.ndarray]], cuts: list[Cut]) -> tuple[int, int]:
    """Overlap and conflict among the entries whose keep was uncertain during the pass."""
    if not records:
        return 0, 0
    idx = np.concatenate([r[0] for r in records])
    d = np.concatenate([r[1] for r in records], axis=1)  # [n, entries]
    pos = np.zeros(idx.size, np.int32)
    neg = np.zeros(idx.size, np.int32)
    for i, cut in enumerate(cuts):
        if cut.k <= 0:
            continue
        a = np.abs(d[i])
        kept = (a > cut.tau) | ((a == cut.tau) & (idx <= cut.cutoff))
        pos += kept & (d[i] > 0)
        neg += kept & (d[i] < 0)
    return int(np.count_nonzero(pos + neg >= 2)), int(np.count_nonzero((pos > 0) & (neg > 0)))


def _energy(cut: Cut, sq: float) -> float:
    """Σ δ² over a cut's kept entries (everything for a cut that keeps all)."""
    if cut.k <= 0:
        return 0.0
    return sq if cut.tau == -math.inf else cut.kept_sq
