"""karcher: the Riemannian mean of the inputs' directions, scaled by their mean norm."""

from __future__ import annotations

import math

import pytest
import torch

from .helpers import assert_rel_close, merge, mergekit_merge, t


def karcher(*xs: torch.Tensor, **params: float) -> torch.Tensor:
    return merge("karcher", list(xs), None, params=params)


def polar(norm: float, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return t(norm * math.cos(a), norm * math.sin(a))


def test_on_a_circle_the_mean_direction_is_the_mean_angle() -> None:
    # Directions at 0°, 30° and 90°: the Karcher mean is at 40° (the normalised Euclidean mean
    # of the unit vectors is at about 41.6°); the norm is the mean norm (1 + 2 + 3)/3 = 2.
    out = karcher(polar(1, 0), polar(2, 30), polar(3, 90))
    torch.testing.assert_close(out, polar(2, 40), rtol=0, atol=1e-5)


def test_identical_directions_keep_their_direction_and_average_the_norms() -> None:
    x = t(1, -2, 2)
    torch.testing.assert_close(karcher(x, 2 * x, 3 * x), 2 * x)


def test_a_zero_input_counts_in_the_norm_but_not_in_the_direction() -> None:
    torch.testing.assert_close(karcher(t(2, 0), t(0, 0)), t(1, 0))


def test_all_zero_inputs_give_zero() -> None:
    torch.testing.assert_close(karcher(t(0, 0), t(0, 0)), t(0, 0))


def test_a_single_input_is_returned() -> None:
    torch.testing.assert_close(karcher(t(3, 4)), t(3, 4))


def test_without_iterations_it_is_the_normalised_mean_direction() -> None:
    u = (t(1, 0) + t(0, 1)) / math.sqrt(2)
    torch.testing.assert_close(karcher(t(1, 0), t(0, 3), max_iter=0), 2 * u)


@pytest.mark.parity
@pytest.mark.parametrize("params", [{}, {"max_iter": 2}, {"tol": 1e-3}])
def test_parity_with_mergekit(params: dict[str, float]) -> None:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(20, 12, generator=g) * s for s in (1.0, 2.0, 0.5)]
    ours = merge("karcher", xs, None, params=params)
    assert_rel_close(ours, mergekit_merge("karcher", xs, None, params=params))
