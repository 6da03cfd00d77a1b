"""Task-vector facts for the report's Method Rationale, measured on a bounded sample.

For each merged tensor the inputs are read again at up to ``SAMPLE_BLOCKS`` evenly spaced row
blocks of about ``BLOCK_ELEMENTS`` elements (tensors that small are read whole), so the cost is
a few kilobytes per tensor and input, whatever the model's size, and the accumulators hold a
few numbers per input, pair and layer. With a base model, the task vector of input i is
``d_i = x_i - base``:

- relative norm ``||d_i|| / ||base||`` (over all sampled elements, and per layer);
- cosine similarity of each pair ``<d_i, d_j> / (||d_i|| ||d_j||)``;
- sign conflict: among entries that two or more task vectors change, the share where their
  signs disagree.

A sampled tensor's sums are scaled by its size over its sample size, so the aggregates
estimate whole-model values (small tensors, read whole, keep their true small weight).

Without a base: each input's relative distance to the inputs' mean ``||x_i - m|| / ||m||``
and the pairwise cosine similarity of the weights (SLERP's geometry).

The sums of each block come from the analysis engine (`alloy.analysis.stats`:
`task_vector_sums` at density 1, so its overlap and conflict are the entries that two task
vectors change; `weight_sums` without a base, whose Gram matrix gives the distances to the
mean); this module only chooses the blocks and adds the sums by model and layer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch

from alloy.analysis.stats import Sums, pairs, task_vector_sums, weight_sums
from alloy.arch.infer import split_layer_name

SAMPLE_BLOCKS = 8
BLOCK_ELEMENTS = 4096

Read = Callable[[tuple[int, int] | None], torch.Tensor]  # a tensor's rows [start, end), or all


@dataclass(frozen=True)
class FactTensor:
    """One merged tensor to measure: how to read each input (and the base), by model label."""

    name: str
    shape: tuple[int, ...]
    keys: tuple[str, ...]  # the model of each input
    inputs: tuple[Read, ...]
    base: Read | None = None


def sample_rows(shape: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """Row ranges to read from a tensor of ``shape``; None to read it whole."""
    numel = math.prod(shape)
    if not shape or numel <= SAMPLE_BLOCKS * BLOCK_ELEMENTS:
        return None
    n_rows, row = shape[0], (math.prod(shape[1:]) or 1)
    per = max(1, BLOCK_ELEMENTS // row)
    if SAMPLE_BLOCKS * per >= n_rows:
        return None
    starts = sorted({round(i * (n_rows - per) / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)})
    return [(s, s + per) for s in starts]


@dataclass
class _Totals:
    """The engine's sums added by model label and layer (``ref``: the base, or the mean)."""

    sq: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    weight_sq: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    dot: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    ref_sq: float = 0.0
    layer_sq: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    layer_ref_sq: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    overlap: float = 0.0
    conflict: float = 0.0

    def add(self, layer: str, keys: Sequence[str], sums: Sums, sq: Sequence[float]) -> None:
        """``sums`` of one tensor (scaled to its size); ``sq``: each input's ``||d_i||²``."""
        ref_sq = sums.base_sq
        self.ref_sq += ref_sq
        self.layer_ref_sq[layer] += ref_sq
        for k, s, w in zip(keys, sq, sums.sq):
            self.sq[k] += s
            self.layer_sq[(k, layer)] += s
            self.weight_sq[k] += w
        for (i, j), d in zip(pairs(len(keys)), sums.dot):
            self.dot[(keys[i], keys[j]) if keys[i] <= keys[j] else (keys[j], keys[i])] += d
        self.overlap += sums.overlap
        self.conflict += sums.conflict


def _layer(name: str) -> str:
    split = split_layer_name(name)
    return str(split[1]) if split is not None else "other"


def _read(read: Read, rows: list[tuple[int, int]] | None) -> torch.Tensor:
    """The sampled rows of one input, flat."""
    if rows is None:
        return read(None).reshape(-1)
    return torch.cat([read(r).reshape(-1) for r in rows])


def _about_mean(sums: Sums) -> tuple[Sums, list[float]]:
    """Weight sums (no base) with ``base_sq = ||m||²`` for the inputs' mean ``m``, and each
    input's ``||x_i − m||²``, from the Gram matrix ``G``: ``<x_i, m> = Σ_j G_ij / n``."""
    n = sums.n
    g = [[0.0] * n for _ in range(n)]
    for i in range(n):
        g[i][i] = sums.sq[i]
    for (i, j), d in zip(pairs(n), sums.dot):
        g[i][j] = g[j][i] = d
    mean_sq = sum(map(sum, g)) / n**2
    dist = [g[i][i] - 2 * sum(g[i]) / n + mean_sq for i in range(n)]
    sums.base_sq = mean_sq
    return sums, [max(d, 0.0) for d in dist]


def _measure(t: FactTensor, rows: list[tuple[int, int]] | None) -> tuple[Sums, list[float]]:
    xs = [_read(r, rows) for r in t.inputs]
    if t.base is not None:
        sums = task_vector_sums(_read(t.base, rows), xs, 1.0, t.keys)
        return sums, list(sums.sq)
    return _about_mean(weight_sums(xs, t.keys))


def task_vector_facts(
    tensors: Sequence[FactTensor], *, with_base: bool, base: str | None
) -> dict[str, Any]:
    """The facts over ``tensors`` (with a base: each has one), from a bounded sample of each."""
    totals = _Totals()
    keys_seen: dict[str, None] = {}
    elements, exact = 0, True
    for t in tensors:
        rows = sample_rows(t.shape)
        exact &= rows is None
        keys_seen.update(dict.fromkeys(t.keys))
        sums, sq = _measure(t, rows)
        numel = math.prod(t.shape)
        w = numel / sums.numel  # the sample's sums estimate the whole tensor's
        elements += int(sums.numel)
        totals.add(_layer(t.name), t.keys, sums.scaled(w), [w * v for v in sq])
    return _summarize(totals, list(keys_seen), with_base, base, len(tensors), elements, exact)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _summarize(
    acc: _Totals,
    keys: list[str],
    with_base: bool,
    base: str | None,
    tensors: int,
    elements: int,
    exact: bool,
) -> dict[str, Any]:
    measure = "relative_norm" if with_base else "relative_distance_to_mean"
    inputs = [
        {"model": k, measure: _ratio(math.sqrt(acc.sq[k]), math.sqrt(acc.ref_sq))} for k in keys
    ]
    pair_rows = []
    for a, b in combinations(keys, 2):
        dot = acc.dot.get((a, b) if a <= b else (b, a), 0.0)
        na, nb = (acc.sq[a], acc.sq[b]) if with_base else (acc.weight_sq[a], acc.weight_sq[b])
        pair_rows.append({"a": a, "b": b, "cosine": _ratio(dot, math.sqrt(na * nb))})
    layers = sorted(acc.layer_ref_sq, key=lambda s: (s == "other", int(s) if s.isdigit() else 0))
    per_layer = {
        k: [
            _ratio(math.sqrt(acc.layer_sq[(k, lay)]), math.sqrt(acc.layer_ref_sq[lay]))
            for lay in layers
        ]
        for k in keys
    }
    return {
        "with_base": with_base,
        "base": base if with_base else None,
        "measure": measure,
        "tensors": tensors,
        "sampled_elements": elements,
        "exact": exact,
        "inputs": inputs,
        "pairs": pair_rows,
        "sign_conflict": _ratio(acc.conflict, acc.overlap) if with_base else None,
        "layers": {"labels": layers, measure: per_layer},
    }
