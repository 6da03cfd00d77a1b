"""The steps shared by the task-vector methods, on whole tensors (`alloy.methods.task_arithmetic`
has the formulas and the table of methods)::

    δ_i = x_i − base                    task_vectors
    δ̂_i = sparsify(δ_i)                 in each method's module (ties, dare, breadcrumbs, della)
    W_i = w_i·s_i·δ̂_i                   weigh (s_i: the sparsifier's rescale, 1 without)
    γ   = elect_sign(W)                 TIES elect (ties, dare_ties, breadcrumbs_ties, della)
    Δ   = disjoint_mean(W, γ) | mean(W) the agreeing entries' mean, or the plain sum
    merged = base + λ·Δ                 add_to_base

These functions are the methods' definitions; the streamed accelerator
(`alloy.methods.streamed.task_vectors`) calls `weigh` and `combine` on each row chunk, so both
paths compute the same operations in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alloy.errors import MergeComputationError
from alloy.kernels.random import mix64
from alloy.methods.sparsify import agrees_with, elect_sign

# Below this L1 norm a task vector counts as zero and is not rescaled (mergekit's tolerance).
L1_EPS = 1e-7


def weight_divisor(weights: Sequence[float]) -> float:
    """What ``normalize`` divides by: the sum of the weights (1 when it is about zero)."""
    total = sum(weights)
    return total if abs(total) >= 1e-8 else 1.0


def input_key(tensor_key: int, index: int) -> int:
    """The random stream of input ``index`` of a tensor whose streams are rooted at ``tensor_key``."""
    return mix64((tensor_key + (index + 1) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))


def tensor_key(generator: torch.Generator | None) -> int:
    """The root of a tensor's random streams: the seed of the generator the executor derives
    from (seed, tensor name), as it derives a streamed tensor's key."""
    return generator.initial_seed() if generator is not None else 0


def task_vectors(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Any],
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, ``δ_i = x_i − base`` stacked: [n, *shape]), refusing a missing base or a parameter
    count that does not match the inputs. The sparsifiers and `weigh` then work on the rows in
    place, so the method holds one float32 copy per input."""
    if base is None:
        raise MergeComputationError(f"{method} merges task vectors and needs a base model")
    if len(inputs) != len(model_params):
        raise MergeComputationError(
            f"{method}: {len(inputs)} inputs but {len(model_params)} sets of model parameters"
        )
    deltas = base.new_empty((len(inputs), *base.shape))  # [n, *shape]
    for i, x in enumerate(inputs):
        torch.sub(x, base, out=deltas[i])
    return base, deltas


def weigh(deltas: torch.Tensor, weights: Sequence[float], scales: Sequence[float]) -> torch.Tensor:
    """``W_i = w_i·(s_i·δ̂_i)`` for the stacked ``δ̂`` [n, *shape], in place."""
    for i, delta in enumerate(deltas):
        if scales[i] != 1.0:
            delta.mul_(torch.tensor(scales[i], dtype=torch.float32))
        delta.mul_(weights[i])
    return deltas


def disjoint_mean(
    weighted: torch.Tensor, sign: torch.Tensor, weights: Sequence[float], normalize: bool
) -> torch.Tensor:
    """TIES's disjoint merge: with ``a_i = [sgn W_i = γ]`` for the elected sign ``γ``,
    ``Σ a_i·W_i`` (divided by ``Σ a_i·w_i`` when ``normalize``; by 1 where none agrees)."""
    agree = agrees_with(weighted, sign)  # a_i
    mixed = (weighted * agree).sum(dim=0)  # Σ a_i·W_i
    if not normalize:
        return mixed
    w = torch.tensor(weights, dtype=weighted.dtype, device=weighted.device)
    divisor = (w.view(-1, *([1] * (weighted.dim() - 1))) * agree).sum(dim=0)  # Σ a_i·w_i
    divisor[divisor == 0] = 1  # no agreeing model: the (zero) sum stays zero
    return mixed / divisor


def mean(weighted: torch.Tensor, weights: Sequence[float], normalize: bool) -> torch.Tensor:
    """``Σ W_i``, divided by ``Σ w_i`` when ``normalize`` (by 1 when that sum is about zero)."""
    mixed = weighted.sum(dim=0)  # Σ W_i
    return mixed / weight_divisor(weights) if normalize else mixed


def combine(
    base: torch.Tensor,
    deltas: torch.Tensor,
    scales: Sequence[float],
    weights: Sequence[float],
    params: Any,
    elect: bool,
) -> torch.Tensor:
    """``base + λ·Δ`` from the stacked sparsified task vectors ``δ̂`` (weighed in place)."""
    if len(deltas) == 0:
        return base.clone()
    weighted = weigh(deltas, weights, scales)  # W_i
    normalize = bool(params.normalize)
    if elect:
        mixed = disjoint_mean(weighted, elect_sign(weighted), weights, normalize)
    else:
        mixed = mean(weighted, weights, normalize)
    del weighted
    return add_to_base(base, mixed, params.lambda_)


def add_to_base(base: torch.Tensor, mixed: torch.Tensor, lambda_: float) -> torch.Tensor:
    """``merged = base + λ·Δ``."""
    return base + lambda_ * mixed


def l1_rescale(delta: torch.Tensor, keep: torch.Tensor) -> float:
    """The factor matching the L1 norm of the kept entries to the whole task vector's (1 when
    either is below `L1_EPS`): mergekit's ``rescale`` for magnitude sparsifiers."""
    magnitude = delta.abs()
    total = float(magnitude.double().sum())
    kept = float(magnitude[keep].double().sum())
    return total / kept if total >= L1_EPS and kept >= L1_EPS else 1.0
