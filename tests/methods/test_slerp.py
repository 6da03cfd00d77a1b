"""slerp (Shoemake 1985) between a base and one model, and multislerp."""

from __future__ import annotations

import math

import pytest
import torch

from alloy.errors import MergeComputationError

from .helpers import assert_rel_close, merge, mergekit_merge, t


def slerp(t_: float, base: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return merge("slerp", [other], base, params={"t": t_})


def test_t0_gives_the_base_and_t1_the_other_model() -> None:
    g = torch.Generator().manual_seed(0)
    base, other = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    torch.testing.assert_close(slerp(0.0, base, other), base, rtol=0, atol=1e-6)
    torch.testing.assert_close(slerp(1.0, base, other), other, rtol=0, atol=1e-6)


def test_orthogonal_unit_vectors_at_half_stay_on_the_unit_circle() -> None:
    e1, e2 = t(1, 0, 0), t(0, 1, 0)
    out = slerp(0.5, e1, e2)
    # θ = π/2: sin(π/4)/sin(π/2)·(e1 + e2) = (e1 + e2)/√2
    torch.testing.assert_close(out, t(1 / math.sqrt(2), 1 / math.sqrt(2), 0))
    assert abs(float(out.norm()) - 1.0) < 1e-6


def test_coefficients_apply_to_the_unnormalised_tensors() -> None:
    # v0 = [1, 0], v1 = [0, 2]: θ = π/2; at t = 1/3, s0 = sin(π/3) = √3/2, s1 = sin(π/6) = 1/2
    out = slerp(1 / 3, t(1, 0), t(0, 2))
    torch.testing.assert_close(out, t(math.sqrt(3) / 2, 1.0))


def test_angle_is_taken_over_the_flattened_matrix() -> None:
    v0 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    v1 = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # θ = 45°: s0 = s1 = sin(22.5°)/sin(45°) at t = 0.5
    s = math.sin(math.pi / 8) / math.sin(math.pi / 4)
    expected = torch.tensor([[3 * s, s], [0.0, 0.0]])
    torch.testing.assert_close(slerp(0.5, v0, v1), expected)


@pytest.mark.parametrize(("factor", "tt"), [(3.0, 0.25), (-1.0, 0.25), (2.0, 0.7)])
def test_colinear_and_antipodal_tensors_interpolate_linearly(factor: float, tt: float) -> None:
    v0 = t(1, -2, 0.5)
    v1 = v0 * factor
    # (1 − t)·v0 + t·factor·v0
    expected = v0 * ((1 - tt) + tt * factor)
    torch.testing.assert_close(slerp(tt, v0, v1), expected)


def test_threshold_between_lerp_and_slerp() -> None:
    # cos θ = 0.9996 > 0.9995: lerp
    c = 0.9996
    v0, v1 = t(1, 0), t(c, math.sqrt(1 - c * c))
    torch.testing.assert_close(slerp(0.5, v0, v1), (v0 + v1) / 2)
    # cos θ = 0.999 < 0.9995: the sine formula, (v0 + v1)/(2 cos(θ/2)) at t = 0.5
    c = 0.999
    v0, v1 = t(1, 0), t(c, math.sqrt(1 - c * c))
    half = math.cos(math.acos(c) / 2)
    torch.testing.assert_close(slerp(0.5, v0, v1), (v0 + v1) / (2 * half))


def test_zero_base_is_not_normalised() -> None:
    # ‖v0‖ = 0 ≤ ε: cos θ = 0, θ = π/2, the other model gets sin(t·π/2) = 1/2 at t = 1/3
    other = t(2, -4, 6)
    torch.testing.assert_close(slerp(1 / 3, torch.zeros(3), other), other * 0.5)


def test_needs_a_base_and_one_other_model() -> None:
    with pytest.raises(MergeComputationError, match="exactly one"):
        merge("slerp", [t(1, 0)], None, params={"t": 0.5})
    with pytest.raises(MergeComputationError, match="exactly one"):
        merge("slerp", [t(1, 0), t(0, 1)], t(1, 1), params={"t": 0.5})


def test_t_is_required() -> None:
    with pytest.raises(ValueError, match="t"):
        merge("slerp", [t(1.0)], t(0.0), params={})


@pytest.mark.parity
@pytest.mark.parametrize("tt", [0.0, 0.1, 0.5, 0.85, 1.0])
@pytest.mark.parametrize("near", [False, True])
def test_slerp_parity_with_mergekit(tt: float, near: bool) -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(32, 16, generator=g)
    other = (
        base + 0.01 * torch.randn(32, 16, generator=g) if near else torch.randn(32, 16, generator=g)
    )
    ours = slerp(tt, base, other)
    theirs = mergekit_merge("slerp", [other], base, params={"t": tt})
    assert_rel_close(ours, theirs)


# ---------------------------------------------------------------------------------------- multislerp


def multislerp(
    inputs: list[torch.Tensor],
    weights: list[float],
    base: torch.Tensor | None = None,
    **params: float | bool,
) -> torch.Tensor:
    return merge(
        "multislerp", inputs, base, params=params, model_params=[{"weight": w} for w in weights]
    )


def test_multislerp_by_hand() -> None:
    # u = [1,0], [0,1]; weights 1/2 each: direction [1,1]/√2; radius ½·3 + ½·4 = 3.5
    out = multislerp([t(3, 0), t(0, 4)], [1.0, 1.0])
    torch.testing.assert_close(out, t(3.5 / math.sqrt(2), 3.5 / math.sqrt(2)))


def test_multislerp_works_in_task_vector_space_around_a_base() -> None:
    base = t(1, 1)
    # task vectors [3,0] and [0,4], weights 1/4 and 3/4 (normalized from 1 and 3):
    # direction ∝ [1/4, 3/4] → [1, 3]/√10; radius ¼·3 + ¾·4 = 3.75
    out = multislerp([t(4, 1), t(1, 5)], [1.0, 3.0], base=base)
    expected = base + t(1, 3) / math.sqrt(10) * 3.75
    torch.testing.assert_close(out, expected)


def test_multislerp_without_weight_normalisation() -> None:
    # weights 2, 2: direction [1,1]/√2 (unchanged), radius 2·3 + 2·4 = 14
    out = multislerp([t(3, 0), t(0, 4)], [2.0, 2.0], normalize_weights=False)
    torch.testing.assert_close(out, t(14 / math.sqrt(2), 14 / math.sqrt(2)))


def test_multislerp_of_identical_inputs_is_the_input() -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(multislerp([x, x, x], [0.2, 0.5, 0.3]), x)


def test_multislerp_single_input_is_returned() -> None:
    x = t(1, 2, 3)
    torch.testing.assert_close(multislerp([x], [0.4], normalize_weights=False), x)


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_equals_slerp_at_half_for_equal_norms(with_base: bool) -> None:
    # Two points of equal norm r, equal weights: both give r·(u0 + u1)/‖u0 + u1‖.
    g = torch.Generator().manual_seed(5)
    base = torch.randn(8, 8, generator=g) if with_base else torch.zeros(8, 8)
    a, b = torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)
    b = b * (a.norm() / b.norm())
    ours = multislerp([base + a, base + b], [1.0, 1.0], base=base if with_base else None)
    expected = base + slerp(0.5, a, b)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_multislerp_antipodal_pair_falls_back_to_the_weighted_sum() -> None:
    x = t(1, -2, 2)
    # unit vectors cancel with equal weights; fallback ½·x + ½·(−2x) = −x/2
    out = multislerp([x, -2 * x], [1.0, 1.0])
    torch.testing.assert_close(out, -x / 2)


def test_multislerp_antipodal_with_more_models_raises() -> None:
    base, x = t(1, 1, 1), t(1, -2, 2)
    # task vectors x, −x and 0 (a model equal to the base): the weighted mean is zero
    with pytest.raises(MergeComputationError, match="antipodal"):
        multislerp([base + x, base - x, base], [1.0, 1.0, 1.0], base=base)


def test_multislerp_zero_sum_weights_raise() -> None:
    with pytest.raises(MergeComputationError, match="sum to 0"):
        multislerp([t(1, 0), t(0, 1)], [1.0, -1.0])


def tangent_step_multislerp(
    xs: list[torch.Tensor], w: list[float], base: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """mergekit's documented steps, literally (reference 1.4), in float64."""
    origin = base.double() if base is not None else torch.zeros_like(xs[0], dtype=torch.float64)
    X = torch.stack([x.double() - origin for x in xs]).reshape(len(xs), -1)
    wt = torch.tensor(w, dtype=torch.float64)
    wt = wt / wt.sum()
    norms = X.norm(dim=1, keepdim=True)
    U = X / (norms + eps)
    m = (wt[:, None] * U).sum(0)
    m = m / m.norm()
    T = (wt[:, None] * (U - (U @ m)[:, None] * m)).sum(0)
    tn = T.norm() + eps
    r = m * torch.cos(tn) + T * torch.sin(tn) / tn
    r = r * (wt * norms[:, 0]).sum()
    return (r.reshape(xs[0].shape) + origin).float()


@pytest.mark.parametrize("eps", [1e-8, 0.05])
def test_multislerp_matches_the_literal_tangent_step(eps: float) -> None:
    g = torch.Generator().manual_seed(6)
    base = torch.randn(6, 7, generator=g)
    xs = [base + torch.randn(6, 7, generator=g) for _ in range(3)]
    w = [0.5, 0.2, 0.3]
    ours = multislerp(xs, w, base=base, eps=eps)
    assert_rel_close(ours, tangent_step_multislerp(xs, w, base, eps))


@pytest.mark.parity
@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize("eps", [1e-8, 0.05])
def test_multislerp_parity_with_mergekit(with_base: bool, eps: float) -> None:
    g = torch.Generator().manual_seed(7)
    base = torch.randn(16, 12, generator=g)
    xs = [base + 0.3 * torch.randn(16, 12, generator=g) for _ in range(3)]
    mps = [{"weight": 0.6}, {"weight": 0.9}, {"weight": 0.3}]
    b = base if with_base else None
    ours = merge("multislerp", xs, b, params={"eps": eps}, model_params=mps)
    theirs = mergekit_merge("multislerp", xs, b, params={"eps": eps}, model_params=mps)
    assert_rel_close(ours, theirs)


def test_multislerp_of_empty_tensors_is_empty() -> None:
    empty = torch.zeros(0, 4)
    assert multislerp([empty, empty, empty], [1.0, 1.0, 1.0]).shape == (0, 4)
