"""Two-model methods that take the other model's values only where they qualify.

NearSwap (alchemonaut, "QuartetAnemoi-70B-t0.0001" model card, mergekit's ``nearswap``): take
the other model where it is already close to the base::

    w = clamp(t / max(|x − base|, 1e-6), 0, 1),   merged = base + w · (x − base)

Arcee Fusion (Arcee AI, mergekit's ``arcee_fusion``): take the other model's change where it
matters most, measured by its size times the divergence of the row's softmax::

    Δ = x − base,   KL_r = Σ_j p_rj log(p_rj / q_rj),  p = softmax(x_r) + 1e-8, q = softmax(base_r) + 1e-8
    s = |Δ| · KL_row                          importance, one KL per row (last dimension)
    τ = Q50(s) + 1.5 · (Q75(s) − Q25(s))      Qq(s) = the ⌊q·(n−1)⌋-th smallest s (0-based)
    merged = base + Δ · [s ≥ τ]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.errors import MergeComputationError
from alloy.methods.bounds import NonNegative
from alloy.methods.registry import NoParams, Params, method

_NEARSWAP_EPS = 1e-6
_KL_EPS = 1e-8
# float32 elements of a row block whose softmax and KL are computed at once
_KL_BLOCK = 4 * 1024 * 1024


class NearSwapParams(Params):
    t: NonNegative  # distance below which the other model's value is taken whole


def _base_and_other(
    name: str, inputs: Sequence[torch.Tensor], base: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if base is None or len(inputs) != 1:
        raise MergeComputationError(
            f"{name} merges a base with exactly one other model; got "
            f"{'a' if base is not None else 'no'} base and {len(inputs)} other model(s)"
        )
    return base, inputs[0]


@method(
    "nearswap",
    params=NearSwapParams,
    base="required",
    min_models=1,
    max_models=1,
    paper="alchemonaut 2024, NearSwap (huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001)",
    summary="Move the base toward the other model where the two are within t of each other.",
    feeding="rows",
    overhead=1.0,
)
def nearswap(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: NearSwapParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``base + clamp(t / |x − base|, 0, 1) · (x − base)``."""
    base, other = _base_and_other("nearswap", inputs, base)
    delta = other - base
    weight = delta.abs().clamp_(min=_NEARSWAP_EPS).reciprocal_().mul_(params.t).clamp_(0, 1)
    return delta.mul_(weight).add_(base)


def row_kl(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """KL(softmax(other_r) ‖ softmax(base_r)) per row r (the last dimension), shape [rows, 1]."""
    width = other.shape[-1] if other.dim() > 0 else 1
    a, b = other.reshape(-1, width), base.reshape(-1, width)
    out = torch.empty((a.shape[0], 1), dtype=a.dtype, device=a.device)
    step = max(1, _KL_BLOCK // max(width, 1))
    for r in range(0, a.shape[0], step):
        p = torch.softmax(a[r : r + step], dim=-1).add_(_KL_EPS)
        q = torch.softmax(b[r : r + step], dim=-1).add_(_KL_EPS)
        out[r : r + step] = (p * (p / q).log_()).sum(dim=-1, keepdim=True)
    return out


def quantile_floor(values: torch.Tensor, q: float) -> torch.Tensor:
    """The ``⌊q·(n−1)⌋``-th smallest value (0-based), by selection: exact and deterministic."""
    flat = values.reshape(-1)
    return torch.kthvalue(flat, int(q * (flat.numel() - 1)) + 1).values


@method(
    "arcee_fusion",
    params=NoParams,
    base="required",
    min_models=1,
    max_models=1,
    paper="Arcee AI 2025, Arcee Fusion (mergekit's arcee_fusion, arcee.ai)",
    summary="Take the other model's changes whose size times row divergence is an outlier "
    "(above median + 1.5 IQR).",
    overhead=3.0,
)
def arcee_fusion(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: NoParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``base + Δ · [s ≥ median(s) + 1.5 IQR(s)]``, ``s = |Δ| · KL`` per row."""
    base, other = _base_and_other("arcee_fusion", inputs, base)
    if base.numel() == 0:
        return base.clone()
    delta = other - base
    width = base.shape[-1] if base.dim() > 0 else 1
    importance = delta.abs().reshape(-1, width).mul_(row_kl(other, base)).reshape(base.shape)
    # Deliberate: exact quantiles by selection; mergekit sorts a random subsample of 1e6
    # entries for larger tensors (unseeded, so its result varies from run to run).
    q1, median, q3 = (quantile_floor(importance, q) for q in (0.25, 0.5, 0.75))
    threshold = median + 1.5 * (q3 - q1)
    return delta.mul_(importance >= threshold).add_(base)
