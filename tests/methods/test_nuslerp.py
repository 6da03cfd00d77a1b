"""nuslerp: weighted SLERP of two models, flattened or per row / column, around a base."""

from __future__ import annotations

import math

import pytest
import torch

from alloy.errors import MergeComputationError

from .helpers import assert_rel_close, merge, mergekit_merge, t

S = math.sqrt(0.5)


def nuslerp(
    a: torch.Tensor,
    b: torch.Tensor,
    weights: tuple[float, float] = (1.0, 1.0),
    base: torch.Tensor | None = None,
    **params: bool,
) -> torch.Tensor:
    mps = [{"weight": w} for w in weights]
    return merge("nuslerp", [a, b], base, params=params, model_params=mps)


def test_t_is_the_second_weight_over_the_sum() -> None:
    # weights 1 and 3: t = 3/4; orthogonal e1 and 2·e2: θ = π/2, sin θ = 1
    out = nuslerp(t(1, 0), t(0, 2), (1.0, 3.0))
    torch.testing.assert_close(out, t(math.sin(math.pi / 8), 2 * math.sin(3 * math.pi / 8)))


def test_weights_summing_to_zero_give_the_midpoint() -> None:
    torch.testing.assert_close(nuslerp(t(1, 0), t(0, 1), (1.0, -1.0)), t(S, S))


def test_flatten_false_interpolates_each_row() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # row 0: a right angle, the midpoint (e1 + e2)·sin(π/4); row 1: identical rows, lerp
    expected = torch.tensor([[S, S], [1.0, 0.0]])
    torch.testing.assert_close(nuslerp(a, b, nuslerp_flatten=False), expected)


def test_row_wise_interpolates_each_column() -> None:
    a = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # column 0: e1 to e2, the midpoint; column 1: identical, unchanged
    expected = torch.tensor([[S, 1.0], [S, 0.0]])
    out = nuslerp(a, b, nuslerp_flatten=False, nuslerp_row_wise=True)
    torch.testing.assert_close(out, expected)


def test_with_a_base_it_interpolates_task_vectors() -> None:
    base = t(1, 1)
    out = nuslerp(t(2, 1), t(1, 3), (1.0, 1.0), base=base)
    # task vectors e1 and 2·e2, t = 1/2: sin(π/4)·(e1 + 2 e2)
    torch.testing.assert_close(out, base + t(S, 2 * S))


def test_antipodal_rows_interpolate_linearly() -> None:
    out = nuslerp(t(1, -2), t(-1, 2), (1.0, 3.0))
    torch.testing.assert_close(out, 0.25 * t(1, -2) + 0.75 * t(-1, 2))


def test_equals_slerp_away_from_the_colinear_threshold() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    out = nuslerp(a, b, (0.7, 0.3))
    torch.testing.assert_close(out, merge("slerp", [b], a, params={"t": 0.3}))


def test_needs_exactly_two_models() -> None:
    with pytest.raises(MergeComputationError, match="exactly two"):
        merge("nuslerp", [t(1, 0)], None, model_params=[{"weight": 1.0}])


@pytest.mark.parity
@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize(
    "params",
    [{}, {"nuslerp_flatten": False}, {"nuslerp_flatten": False, "nuslerp_row_wise": True}],
)
def test_parity_with_mergekit(with_base: bool, params: dict[str, bool]) -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(16, 12, generator=g)
    a, b = (base + 0.1 * torch.randn(16, 12, generator=g) for _ in range(2))
    mps = [{"weight": 0.4}, {"weight": 1.1}]
    b0 = base if with_base else None
    ours = merge("nuslerp", [a, b], b0, params=params, model_params=mps)
    theirs = mergekit_merge("nuslerp", [a, b], b0, params=params, model_params=mps)
    assert_rel_close(ours, theirs)
