"""Karcher mean: the Riemannian centre of mass of the inputs' directions on the unit sphere.

Karcher 1977, "Riemannian center of mass and mollifier smoothing" (Comm. Pure Appl. Math. 30),
as mergekit's ``karcher`` method computes it: each flattened tensor is split into its norm
``n_i`` and direction ``u_i = x_i/n_i``; the mean direction ``m`` minimises ``Σ_i a_i·θ(m, u_i)²``
and is found by fixed-point iteration in the tangent space at ``m``::

    θ_i = arccos⟨m, u_i⟩
    T   = Σ_i a_i · θ_i/sin θ_i · (u_i − cos θ_i · m)        (log map; θ_i < tol skipped)
    m  ← cos‖T‖ · m + sin‖T‖ · T/‖T‖                          (exp map), until ‖T‖ < tol
    merged = (Σ_i a_i n_i) · m,   a_i = 1/N

Inputs with ``n_i ≤ tol`` take no part in the direction (they still count in the norm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field

from alloy.methods.bounds import NonNegative
from alloy.methods.registry import NoParams, Params, method

# Karcher iterations allowed at most: mergekit's default is 10, convergence takes a few dozen.
MAX_ITER = 1000


class KarcherParams(Params):
    # fixed-point iterations at most (bounded: each is a pass over the tensor)
    max_iter: int = Field(default=10, ge=0, le=MAX_ITER)
    # stop when the tangent step is shorter; smaller norms and angles are ignored
    tol: NonNegative = 1e-5


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vecdot(a.reshape(-1), b.reshape(-1)))


@method(
    "karcher",
    params=KarcherParams,
    base="none",
    min_models=1,
    paper="Karcher 1977, Riemannian center of mass and mollifier smoothing "
    "(Comm. Pure Appl. Math. 30); mergekit's karcher",
    summary="Riemannian mean of the inputs' directions on the unit sphere, scaled by their "
    "mean norm (equal weights).",
    overhead=1.0,
)
def karcher(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: KarcherParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The Karcher mean of the module docstring; a base listed under models is an input."""
    if len(inputs) == 1:
        return inputs[0]
    tol, n = params.tol, len(inputs)
    norms = [float(torch.linalg.vector_norm(x)) for x in inputs]
    scale = math.fsum(n_i / n for n_i in norms)  # Σ a_i n_i over every input
    valid = [i for i, n_i in enumerate(norms) if n_i > tol]
    if not valid:
        return torch.zeros_like(inputs[0])
    alpha = 1.0 / len(valid)  # equal weights, renormalised over the directions that count

    # Directions are never materialised: u_i = x_i / n_i inside each product.
    mean = torch.zeros_like(inputs[0])
    for i in valid:
        mean.add_(inputs[i], alpha=alpha / norms[i])
    mean_norm = float(torch.linalg.vector_norm(mean))
    if mean_norm < tol:  # directions cancel: start from the first one
        mean = inputs[valid[0]] / norms[valid[0]]
    else:
        mean.div_(mean_norm)

    tangent = torch.empty_like(mean)
    for _ in range(params.max_iter):
        tangent.zero_()
        for i in valid:
            cos = min(1.0, max(-1.0, _dot(mean, inputs[i]) / norms[i]))
            theta = math.acos(cos)
            if theta < tol:
                continue
            c = alpha * theta / math.sin(theta)
            tangent.add_(inputs[i], alpha=c / norms[i]).add_(mean, alpha=-c * cos)
        step = float(torch.linalg.vector_norm(tangent))
        if step < tol:
            break
        mean.mul_(math.cos(step)).add_(tangent, alpha=math.sin(step) / step)
        mean_norm = float(torch.linalg.vector_norm(mean))
        if mean_norm > tol:
            mean.div_(mean_norm)
    return mean.mul_(scale)
