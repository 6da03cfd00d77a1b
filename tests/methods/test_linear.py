"""linear: Σ w_i·x_i, normalized by Σ w_i by default (Wortsman et al. 2022)."""

from __future__ import annotations

import pytest
import torch

from alloy.errors import MergeComputationError

from .helpers import assert_rel_close, merge, mergekit_merge, t


def test_weighted_average_by_hand() -> None:
    x1, x2 = t(1, 2, 3), t(3, 6, -1)
    # (1·[1,2,3] + 3·[3,6,-1]) = [10, 20, 0]; divided by 1 + 3 = 4
    out = merge("linear", [x1, x2], model_params=[{"weight": 1}, {"weight": 3}])
    torch.testing.assert_close(out, t(2.5, 5.0, 0.0))


def test_without_normalize_is_the_weighted_sum() -> None:
    x1, x2 = t(1, 2, 3), t(3, 6, -1)
    out = merge(
        "linear",
        [x1, x2],
        params={"normalize": False},
        model_params=[{"weight": 1}, {"weight": 3}],
    )
    torch.testing.assert_close(out, t(10, 20, 0))


def test_2d_tensor_by_hand() -> None:
    a = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    b = torch.tensor([[3.0, 2.0], [1.5, 0.0]])
    # weights 0.25 / 0.75 (sum 1): 0.25·a + 0.75·b
    expected = torch.tensor([[2.5, 1.0], [1.25, 1.0]])
    out = merge("linear", [a, b], model_params=[{"weight": 0.25}, {"weight": 0.75}])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("normalize", [True, False])
def test_weights_summing_to_one_reproduce_identical_inputs(normalize: bool) -> None:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    weights = [{"weight": 0.2}, {"weight": 0.3}, {"weight": 0.5}]
    out = merge("linear", [x, x, x], params={"normalize": normalize}, model_params=weights)
    torch.testing.assert_close(out, x)


def test_normalize_makes_any_positive_weights_reproduce_identical_inputs() -> None:
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    out = merge("linear", [x, x], model_params=[{"weight": 2.0}, {"weight": 5.0}])
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize("weights", [[1.0, -1.0], [0.3, -0.1, -0.2], [0.0, 0.0]])
def test_zero_sum_weights_raise(weights: list[float]) -> None:
    xs = [torch.ones(3) * (i + 1) for i in range(len(weights))]
    with pytest.raises(MergeComputationError, match="sum to"):
        merge("linear", xs, model_params=[{"weight": w} for w in weights])


def test_zero_sum_weights_are_fine_without_normalize() -> None:
    # 1·[1,2] − 1·[3,5] = [−2, −3]
    out = merge(
        "linear",
        [t(1, 2), t(3, 5)],
        params={"normalize": False},
        model_params=[{"weight": 1}, {"weight": -1}],
    )
    torch.testing.assert_close(out, t(-2, -3))


def test_inputs_are_not_modified() -> None:
    x1, x2 = t(1, 2), t(3, 4)
    merge("linear", [x1, x2], model_params=[{"weight": 1}, {"weight": 1}])
    torch.testing.assert_close(x1, t(1, 2))
    torch.testing.assert_close(x2, t(3, 4))


def test_weight_is_required() -> None:
    with pytest.raises(ValueError, match="weight"):
        merge("linear", [t(1.0)], model_params=[{}])


@pytest.mark.parity
@pytest.mark.parametrize("normalize", [True, False])
def test_parity_with_mergekit(normalize: bool) -> None:
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(16, 24, generator=g) for _ in range(3)]
    mps = [{"weight": 0.7}, {"weight": 0.2}, {"weight": 1.3}]
    ours = merge("linear", xs, params={"normalize": normalize}, model_params=mps)
    theirs = mergekit_merge("linear", xs, params={"normalize": normalize}, model_params=mps)
    assert_rel_close(ours, theirs)


@pytest.mark.parity
def test_zero_sum_is_an_error_where_mergekit_returns_non_finite_values() -> None:
    # Deliberate difference: mergekit divides by the zero sum.
    xs = [t(1, 2, 3), t(2, 2, 5)]
    mps = [{"weight": 1.0}, {"weight": -1.0}]
    theirs = mergekit_merge("linear", xs, model_params=mps)
    assert not torch.isfinite(theirs).all()
    with pytest.raises(MergeComputationError):
        merge("linear", xs, model_params=mps)
