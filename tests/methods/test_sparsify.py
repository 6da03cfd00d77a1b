"""Magnitude trimming, DARE drop and sign election, tested on their own."""

from __future__ import annotations

import pytest
import torch

from alloy.errors import MergeComputationError
from alloy.methods.sparsify import (
    agrees_with,
    dare_drop,
    elect_sign,
    magnitude_keep_count,
    match_l1_norm,
    top_magnitude_mask,
    trim_magnitude,
)

from .helpers import t


@pytest.mark.parametrize(
    ("numel", "density", "k"),
    [
        (10, 0.5, 5),
        (7, 0.5, 3),
        (10, 0.01, 1),
        (10, 0.0, 0),
        (10, 1.0, 10),
        (10, 1.5, 10),
        (0, 0.5, 0),
    ],
)
def test_keep_count(numel: int, density: float, k: int) -> None:
    assert magnitude_keep_count(numel, density) == k


def test_top_magnitude_mask_by_hand() -> None:
    delta = t(0.5, -3, 2, -0.1, 4)
    assert top_magnitude_mask(delta, 2).tolist() == [False, True, False, False, True]
    assert top_magnitude_mask(delta, 0).sum() == 0
    assert top_magnitude_mask(delta, 5).all()


def test_top_magnitude_mask_ties_take_the_lowest_indices() -> None:
    delta = torch.tensor([[2.0, -1.0, 1.0], [-1.0, 3.0, 1.0]])
    # |δ| = [[2, 1, 1], [1, 3, 1]]; k = 4: 3 and 2, then the 1s at flat indices 1 and 2
    expected = torch.tensor([[True, True, True], [False, True, False]])
    assert torch.equal(top_magnitude_mask(delta, 4), expected)


@pytest.mark.parametrize("k", [1, 17, 250, 499, 500, 999])
def test_top_magnitude_mask_keeps_exactly_k_and_matches_a_stable_sort(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    # Few distinct magnitudes, so nearly every threshold falls among equal values.
    delta = (torch.randint(-4, 5, (20, 50), generator=g)).float()
    mask = top_magnitude_mask(delta, k)
    assert int(mask.sum()) == k
    # Independent reference: a stable descending sort keeps equal magnitudes in index order.
    order = torch.sort(delta.abs().reshape(-1), descending=True, stable=True).indices
    expected = torch.zeros(delta.numel(), dtype=torch.bool)
    expected[order[:k]] = True
    assert torch.equal(mask.reshape(-1), expected)


def test_trim_magnitude_density_one_is_the_identity() -> None:
    delta = t(1, -2, 3)
    assert trim_magnitude(delta, 1.0, rescale=True) is delta


def test_match_l1_norm() -> None:
    torch.testing.assert_close(match_l1_norm(t(2, 0, 0), t(2, -1, 1)), t(4, 0, 0))
    # a (near-)zero norm is left alone
    torch.testing.assert_close(match_l1_norm(t(0, 0), t(1, 1)), t(0, 0))


def test_dare_drop_follows_the_generator_stream() -> None:
    delta = torch.linspace(-1, 1, 50)
    out = dare_drop(delta, 0.3, rescale=True, generator=torch.Generator().manual_seed(9))
    # The contract: keep where rand < p, drawn from the given generator, then divide by p.
    keep = torch.rand(50, generator=torch.Generator().manual_seed(9)) < 0.3
    torch.testing.assert_close(out, torch.where(keep, delta / 0.3, 0.0))


def test_dare_drop_without_rescale_keeps_values() -> None:
    delta = torch.linspace(1, 2, 100)
    out = dare_drop(delta, 0.5, rescale=False, generator=torch.Generator().manual_seed(0))
    kept = out != 0
    assert 0 < int(kept.sum()) < 100
    assert torch.equal(out[kept], delta[kept])


def test_dare_drop_edge_densities() -> None:
    delta = t(1, 2, 3)
    assert dare_drop(delta, 1.0, rescale=True, generator=None) is delta
    assert torch.equal(dare_drop(delta, 0.0, rescale=True, generator=None), torch.zeros(3))
    with pytest.raises(MergeComputationError, match="Generator"):
        dare_drop(delta, 0.5, rescale=True, generator=None)
    with pytest.raises(MergeComputationError, match="density"):
        dare_drop(delta, float("nan"), rescale=True, generator=torch.Generator())


def test_sign_election_by_hand() -> None:
    weighted = torch.tensor([[3.0, -1.0, 0.0, 2.0], [-4.0, 0.5, 0.0, -2.0]])
    # Σ = [−1, −0.5, 0, 0]: γ = [−, −, +, +] (a zero sum elects +)
    sign = elect_sign(weighted)
    assert sign.tolist() == [-1.0, -1.0, 1.0, 1.0]
    # zeros never agree, even with an elected +
    assert agrees_with(weighted, sign).tolist() == [
        [False, True, False, True],
        [True, False, False, False],
    ]
