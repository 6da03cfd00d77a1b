"""Spherical interpolation: SLERP between a base and one model, and multi-model SLERP.

SLERP (Shoemake 1985, "Animating rotation with quaternion curves", SIGGRAPH '85), with the angle
measured between the flattened tensors and the coefficients applied to the unnormalised tensors::

    cos θ = ⟨v0/‖v0‖, v1/‖v1‖⟩
    merged = sin((1−t)θ)/sin θ · v0 + sin(tθ)/sin θ · v1     (|cos θ| ≤ 0.9995)
    merged = (1−t)·v0 + t·v1                                   (nearly colinear)

NuSLERP (mergekit's ``nuslerp``): SLERP between two models with ``t = w_2 / (w_1 + w_2)``, over the
flattened tensors or vector by vector (rows ``W[i, :]``, or columns ``W[:, j]`` with
``nuslerp_row_wise``), of task vectors when a base is given; no 0.9995 threshold, lerp only where
``sin θ`` vanishes.

Multi-SLERP (mergekit's ``multislerp``, C. Goddard 2024): barycentric interpolation on the
hypersphere, in task-vector space when a base is given::

    u_i = x_i / (‖x_i‖ + ε),   m = Σ w_i u_i / ‖Σ w_i u_i‖,   merged = (Σ w_i ‖x_i‖) · m
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alloy.errors import MergeComputationError
from alloy.methods.bounds import Fraction, NonNegative, Scale
from alloy.methods.linear import weighted_sum
from alloy.methods.registry import NoParams, Params, method
from alloy.methods.streamed.slerp import SlerpStream

# |cos θ| above this: the tensors are nearly colinear, sin θ ≈ 0, interpolate linearly.
DOT_THRESHOLD = 0.9995
# A tensor whose norm is at most this is not normalised before measuring the angle.
NORM_EPS = 1e-8


class SlerpParams(Params):
    t: Fraction  # 0 gives the base, 1 the other model


class NuSlerpParams(Params):
    nuslerp_row_wise: bool = False  # interpolate columns W[:, j] (dim 0) instead of rows
    nuslerp_flatten: bool = True  # one interpolation over the whole flattened tensor


class NuSlerpModelParams(Params):
    weight: Scale


class MultiSlerpParams(Params):
    normalize_weights: bool = True  # divide the weights by their sum
    eps: NonNegative = 1e-8  # added to norms before dividing by them


class MultiSlerpModelParams(Params):
    weight: Scale


def slerp_coefficients(t: float, aa: float, bb: float, ab: float) -> tuple[float, float]:
    """(s0, s1) with ``slerp = s0·v0 + s1·v1``, from ‖v0‖², ‖v1‖² and ⟨v0, v1⟩ of the flattened
    tensors; a norm ≤ ε is left as 1 when measuring the angle, and nearly colinear tensors
    (|cos θ| > 0.9995) are interpolated linearly."""
    norm_a, norm_b = math.sqrt(aa), math.sqrt(bb)
    scale = (norm_a if norm_a > NORM_EPS else 1.0) * (norm_b if norm_b > NORM_EPS else 1.0)
    cos_theta = min(1.0, max(-1.0, ab / scale))
    if abs(cos_theta) > DOT_THRESHOLD:
        return 1 - t, t  # lerp on the originals
    theta = math.acos(cos_theta)  # angle between the tensors
    sin_theta = math.sin(theta)
    return math.sin((1 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta


@method(
    "slerp",
    params=SlerpParams,
    base="required",
    min_models=1,
    max_models=1,
    paper="Shoemake 1985, Animating rotation with quaternion curves (SIGGRAPH '85)",
    summary="Spherical interpolation from the base (t=0) to the other model (t=1).",
    feeding="rows_after_passes",
    accelerator=SlerpStream,
    overhead=2.0,
)
def slerp(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SlerpParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``slerp(t, base, x)`` for the one non-base input ``x``."""
    v0, v1 = slerp_pair(inputs, base)
    a, b = v0.reshape(-1), v1.reshape(-1)
    dots = float(torch.dot(a, a)), float(torch.dot(b, b)), float(torch.dot(a, b))
    return weighted_sum([v0, v1], slerp_coefficients(params.t, *dots), 1.0)


def slerp_pair(
    inputs: Sequence[torch.Tensor], base: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, the other model), refusing anything but a base and one other input."""
    if base is None or len(inputs) != 1:
        raise MergeComputationError(
            f"slerp interpolates between a base and exactly one other model; got "
            f"{'a' if base is not None else 'no'} base and {len(inputs)} other input(s)"
        )
    return base, inputs[0]


# NuSLERP: norms are clamped below at this before dividing; |sin θ| ≤ this means colinear.
NU_NORM_EPS = 1e-7
NU_SIN_EPS = 1e-8


def nuslerp_tensors(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, flatten: bool, row_wise: bool
) -> torch.Tensor:
    """SLERP from ``v0`` (t=0) to ``v1`` (t=1) per vector: the flattened tensor, the vectors along
    the last dimension, or (``row_wise``) along dimension 0."""
    if flatten or v0.dim() == 0:
        a, b = v0.reshape(1, -1), v1.reshape(1, -1)  # [1, n], views
    elif row_wise:
        a, b = v0.movedim(0, -1), v1.movedim(0, -1)  # vectors along dim 0, as the last dim
    else:
        a, b = v0, v1
    norm_a = torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_(min=NU_NORM_EPS)
    norm_b = torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp_(min=NU_NORM_EPS)
    cos = (torch.linalg.vecdot(a, b).unsqueeze(-1) / (norm_a * norm_b)).clamp_(-1, 1)  # [..., 1]
    colinear = (1 - cos.square()) <= NU_SIN_EPS**2
    theta = torch.acos(torch.where(colinear, 0.0, cos))
    sin_theta = torch.where(colinear, 1.0, torch.sin(theta))
    s0 = torch.where(colinear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    s1 = torch.where(colinear, t, torch.sin(t * theta) / sin_theta)
    merged = a * s0
    merged.add_(b * s1)  # s0·a + s1·b per vector; lerp where sin θ vanishes
    if not flatten and row_wise and v0.dim() > 0:
        merged = merged.movedim(-1, 0)
    return merged.reshape(v0.shape)


@method(
    "nuslerp",
    params=NuSlerpParams,
    model_params=NuSlerpModelParams,
    base="optional",
    min_models=2,
    max_models=2,
    paper="mergekit's NuSLERP (C. Goddard 2024): SLERP (Shoemake 1985) with weights, per row "
    "or flattened, of task vectors around an optional base",
    summary="SLERP between two models with t = w2/(w1+w2), per row or flattened; of task "
    "vectors when a base is given.",
    overhead=2.0,
)
def nuslerp(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: NuSlerpParams,
    model_params: Sequence[NuSlerpModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``base + slerp(t, x_1 − base, x_2 − base)`` (without a base: of ``x_1`` and ``x_2``)."""
    if len(inputs) != 2:
        raise MergeComputationError(
            f"nuslerp interpolates exactly two models besides the base; got {len(inputs)}"
        )
    w1, w2 = (p.weight for p in model_params)
    t = 0.5 if abs(w1 + w2) < 1e-6 else w2 / (w1 + w2)
    v0, v1 = inputs if base is None else (inputs[0] - base, inputs[1] - base)
    merged = nuslerp_tensors(
        t, v0, v1, flatten=params.nuslerp_flatten, row_wise=params.nuslerp_row_wise
    )
    return merged if base is None else merged.add_(base)


@method(
    "multislerp",
    params=MultiSlerpParams,
    model_params=MultiSlerpModelParams,
    base="optional",
    min_models=1,
    paper="C. Goddard 2024, Multi-SLERP (goddard.blog/posts/multislerp-wow-what-a-cool-idea)",
    summary="Weighted spherical mean of the inputs (of task vectors when a base is given).",
    overhead=2.0,
)
def multislerp(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: MultiSlerpParams,
    model_params: Sequence[MultiSlerpModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Barycentric interpolation on the hypersphere (see the module docstring)."""
    if len(inputs) == 1:
        return inputs[0]  # nothing to interpolate (mergekit returns the input, whatever its weight)
    if inputs[0].numel() == 0:
        return inputs[0].clone()  # an empty tensor has no direction (mergekit raises here)
    eps = params.eps
    weights = [p.weight for p in model_params]
    if params.normalize_weights:
        total = math.fsum(weights)
        if total == 0:  # Deliberate: an error; mergekit divides by the zero sum (inf/NaN).
            raise MergeComputationError(
                f"multislerp: the weights {weights} sum to 0 and cannot be normalized; "
                "change them or set `normalize_weights: false`"
            )
        weights = [w / total for w in weights]

    points = [x if base is None else x - base for x in inputs]  # task vectors around the base
    norms = [float(torch.linalg.vector_norm(p)) for p in points]
    mean = torch.zeros_like(points[0])  # m = Σ w_i u_i,  u_i = x_i / (‖x_i‖ + ε)
    for p, w, n in zip(points, weights, norms, strict=True):
        mean.add_(p, alpha=w / (n + eps))
    mean_norm = float(torch.linalg.vector_norm(mean))
    if mean_norm < eps:
        if len(points) == 2:  # antipodal pair: fall back to the weighted sum
            merged = points[0] * weights[0] + points[1] * weights[1]
            return merged if base is None else merged + base
        raise MergeComputationError(
            "multislerp: the weighted mean of the unit-normalised inputs is zero (antipodal "
            "tensors whose weights cancel, e.g. a and -a with equal weights); change the weights"
        )
    direction = mean / mean_norm  # m / ‖m‖, the point on the sphere
    # The tangent step at m is zero: T = Σ w_i (u_i − ⟨u_i, m⟩m) = M − ‖M‖m = 0 for M = Σ w_i u_i,
    # so the exponential map m·cos(‖T‖+ε) + T·sin(‖T‖+ε)/(‖T‖+ε) is m·cos(ε) (mergekit adds ε to
    # ‖T‖; cos(1e-8) = 1 in float32, kept so a custom eps gives mergekit's result).
    on_sphere = direction * math.cos(eps)
    radius = math.fsum(w * n for w, n in zip(weights, norms, strict=True))  # Σ w_i ‖x_i‖
    merged = on_sphere * radius
    return merged if base is None else merged + base
