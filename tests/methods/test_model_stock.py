"""model_stock (Jang et al. 2024): the fine-tunes' mean pulled toward the base by their angle."""

from __future__ import annotations

import math

import pytest
import torch

from alloy.errors import MergeComputationError

from .helpers import assert_rel_close, merge, mergekit_merge, t


def stock(xs: list[torch.Tensor], base: torch.Tensor, **params: bool) -> torch.Tensor:
    return merge("model_stock", xs, base, params=params)


def test_two_models_at_sixty_degrees() -> None:
    # offsets e1 and 2·(cos 60°, sin 60°): cos θ = 1/2, t = 2·½ / (1 + ½) = 2/3
    base = t(1, 1)
    x1, x2 = base + t(1, 0), base + t(1, math.sqrt(3))
    expected = base + 2 / 3 * t(1, math.sqrt(3) / 2)  # base + t·(mean − base)
    torch.testing.assert_close(stock([x1, x2], base), expected)


def test_three_models_use_the_mean_pairwise_cosine() -> None:
    # offsets e1, e2, e1 + e2: cosines 0, 1/√2, 1/√2, mean √2/3; t = 3c / (1 + 2c)
    base = torch.zeros(2)
    xs = [t(1, 0), t(0, 1), t(1, 1)]
    c = math.sqrt(2) / 3
    ratio = 3 * c / (1 + 2 * c)
    torch.testing.assert_close(stock(xs, base), ratio * t(2, 2) / 3)


def test_opposed_fine_tunes_give_the_base_where_mergekit_extrapolates() -> None:
    """cos θ < 0: mergekit's t = N cos θ / (1 + (N − 1) cos θ) is negative or huge (here
    cos θ = −0.995, t ≈ −401, 400 times the mean offset (0, 0.05) away from the base, on the
    far side); Alloy clamps cos θ to [0, 1], so t = 0 and the result is the base."""
    base = t(0.5, -0.5)
    xs = [base + t(1, 0), base + t(-1, 0.1)]
    torch.testing.assert_close(stock(xs, base), base)
    theirs = mergekit_merge("model_stock", xs, base)
    c = -1 / math.sqrt(1.01)
    torch.testing.assert_close(theirs, base + 2 * c / (1 + c) * t(0, 0.05), rtol=1e-3, atol=0)


def test_filter_wise_takes_one_ratio_per_row() -> None:
    base = torch.zeros(2, 2)
    x1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    x2 = torch.tensor([[1.0, math.sqrt(3)], [1.0, 1.0]])
    # row 0: cos 1/2, t = 2/3; row 1: identical offsets, cos 1, t = 1 (the mean)
    expected = torch.tensor([[2 / 3, 2 / 3 * math.sqrt(3) / 2], [1.0, 1.0]])
    torch.testing.assert_close(stock([x1, x2], base, filter_wise=True), expected)


def test_zero_offsets_keep_the_base() -> None:
    base = t(1, 2, 3)
    torch.testing.assert_close(stock([base.clone(), base + t(1, 0, 0)], base), base)


def test_needs_two_models_and_a_base() -> None:
    with pytest.raises(MergeComputationError, match="at least two"):
        stock([t(1, 0)], t(0, 0))


@pytest.mark.parity
@pytest.mark.parametrize("filter_wise", [False, True])
def test_parity_with_mergekit_when_the_fine_tunes_agree(filter_wise: bool) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 24, generator=g)
    shared = torch.randn(16, 24, generator=g)
    xs = [base + shared + 0.7 * torch.randn(16, 24, generator=g) for _ in range(3)]
    params = {"filter_wise": filter_wise}
    ours = stock(xs, base, **params)
    assert_rel_close(ours, mergekit_merge("model_stock", xs, base, params=params))
