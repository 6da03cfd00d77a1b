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
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations
from typing import Any

import torch

from alloy.arch.infer import split_layer_name
from alloy.plan.planner import InputRef, MergePlan

SAMPLE_BLOCKS = 8
BLOCK_ELEMENTS = 4096


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


class _Acc:
    """Running sums over sampled elements (float64)."""

    def __init__(self) -> None:
        self.sq: dict[str, float] = defaultdict(float)  # ||d_i||^2 (or ||x_i - m||^2)
        self.dot: dict[tuple[str, str], float] = defaultdict(float)
        self.ref_sq = 0.0  # ||base||^2 (or ||m||^2)
        self.layer_sq: dict[tuple[str, str], float] = defaultdict(float)
        self.layer_ref_sq: dict[str, float] = defaultdict(float)
        self.changed_by_two = 0.0
        self.conflicts = 0.0
        self.elements = 0
        self.tensors = 0
        self.exact = True


def _layer(name: str) -> str:
    split = split_layer_name(name)
    return str(split[1]) if split is not None else "other"


def _read(plan: MergePlan, ref: InputRef, rows: tuple[int, int] | None) -> torch.Tensor:
    return plan.models[ref.model].weights.get(ref.name, rows).float().reshape(-1)


def _update(
    acc: _Acc,
    layer: str,
    keys: list[str],
    xs: list[torch.Tensor],
    ref: torch.Tensor,
    vectors: list[torch.Tensor],
    with_base: bool,
    w: float,
) -> None:
    """Add one sampled block; ``w`` = the tensor's elements / its sampled elements, so that
    every sum estimates the sum over whole tensors (a sampled matrix weighs as much as its
    size, not as much as its sample)."""
    ref_sq = w * float(ref.double().square().sum())
    acc.ref_sq += ref_sq
    acc.layer_ref_sq[layer] += ref_sq
    for k, v in zip(keys, vectors):
        s = w * float(v.double().square().sum())
        acc.sq[k] += s
        acc.layer_sq[(k, layer)] += s
    pairs_of = vectors if with_base else xs
    for (i, a), (j, b) in combinations(enumerate(pairs_of), 2):
        pair = (keys[i], keys[j]) if keys[i] <= keys[j] else (keys[j], keys[i])
        acc.dot[pair] += w * float((a.double() * b.double()).sum())
    if with_base and len(vectors) > 1:
        signs = torch.stack([torch.sign(v) for v in vectors])
        nonzero = (signs != 0).sum(0)
        several = nonzero >= 2
        mixed = (signs > 0).any(0) & (signs < 0).any(0)
        acc.changed_by_two += w * int(several.sum())
        acc.conflicts += w * int((several & mixed).sum())
    acc.elements += ref.numel()


def task_vector_facts(plan: MergePlan) -> dict[str, Any]:
    """The facts for ``plan``'s inputs, from a bounded sample of every merged tensor."""
    acc = _Acc()
    weight_sq: dict[str, float] = defaultdict(float)  # no base: ||x_i||^2 for the cosine
    with_base = plan.method.base != "none" and any(j.base is not None for j in plan.jobs)
    keys_seen: dict[str, None] = {}
    for job in plan.jobs:
        if job.copy_only or not job.inputs or (with_base and job.base is None):
            continue
        if not with_base and len(job.inputs) < 2:
            continue  # passthrough: nothing to compare
        rows_list = sample_rows(job.info.shape)
        acc.exact &= rows_list is None
        acc.tensors += 1
        keys = [str(r.model) for r in job.inputs]
        keys_seen.update(dict.fromkeys(keys))
        blocks: list[tuple[int, int] | None] = list(rows_list) if rows_list else [None]
        row = math.prod(job.info.shape[1:]) if job.info.shape else 1
        sampled = sum(e - s for s, e in rows_list) * row if rows_list else job.info.numel
        w = job.info.numel / sampled
        for rows in blocks:
            xs = [_read(plan, r, rows) for r in job.inputs]
            if with_base:
                assert job.base is not None
                ref = _read(plan, job.base, rows)
                vectors = [x - ref for x in xs]
            else:
                ref = torch.stack(xs).mean(0)
                vectors = [x - ref for x in xs]
                for k, x in zip(keys, xs):
                    weight_sq[k] += w * float(x.double().square().sum())
            _update(acc, _layer(job.name), keys, xs, ref, vectors, with_base, w)
    return _summarize(plan, acc, list(keys_seen), with_base, weight_sq)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _summarize(
    plan: MergePlan, acc: _Acc, keys: list[str], with_base: bool, weight_sq: dict[str, float]
) -> dict[str, Any]:
    measure = "relative_norm" if with_base else "relative_distance_to_mean"
    inputs = [
        {"model": k, measure: _ratio(math.sqrt(acc.sq[k]), math.sqrt(acc.ref_sq))} for k in keys
    ]
    pairs = []
    for a, b in combinations(keys, 2):
        dot = acc.dot.get((a, b) if a <= b else (b, a), 0.0)
        na, nb = (acc.sq[a], acc.sq[b]) if with_base else (weight_sq[a], weight_sq[b])
        pairs.append({"a": a, "b": b, "cosine": _ratio(dot, math.sqrt(na * nb))})
    layers = sorted(acc.layer_ref_sq, key=lambda s: (s == "other", int(s) if s.isdigit() else 0))
    per_layer = {
        k: [
            _ratio(math.sqrt(acc.layer_sq[(k, lay)]), math.sqrt(acc.layer_ref_sq[lay]))
            for lay in layers
        ]
        for k in keys
    }
    base = plan.config.base_model
    return {
        "with_base": with_base,
        "base": str(base) if with_base and base is not None else None,
        "measure": measure,
        "tensors": acc.tensors,
        "sampled_elements": acc.elements,
        "exact": acc.exact,
        "inputs": inputs,
        "pairs": pairs,
        "sign_conflict": _ratio(acc.conflicts, acc.changed_by_two) if with_base else None,
        "layers": {"labels": layers, measure: per_layer},
    }
