"""Magnitude trimming, DARE drop and sign election: what one task vector keeps."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from alloy.kernels.random import draws32, keep_threshold
from alloy.methods.sparsify import (
    agrees_with,
    elect_sign,
    magnitude_keep_count,
    top_magnitude_mask,
)
from alloy.methods.task_vectors import input_key

from .helpers import merge, sparsified, t


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


def test_trim_keeps_the_top_k_by_magnitude() -> None:
    delta = t(0.5, -3, 2, -0.1, 4)
    # density 0.4 of 5 entries keeps k = 2: -3 and 4
    torch.testing.assert_close(sparsified("ties", delta, density=0.4), t(0, -3, 0, 0, 4))
    assert torch.equal(sparsified("ties", delta, density=1.0), delta)


def test_trim_rescale_matches_the_l1_norm_of_the_task_vector() -> None:
    # density 1/3 of 3 keeps the 2; L1 norms 4 (all) and 2 (kept): the kept entry doubles
    out = sparsified("ties", t(2, -1, 1), density=1 / 3, rescale=True)
    torch.testing.assert_close(out, t(4, 0, 0))
    # a (near-)zero task vector is left alone
    assert torch.equal(sparsified("ties", t(0, 0), density=0.5, rescale=True), t(0, 0))


def test_dare_drop_follows_the_counter_stream() -> None:
    delta = torch.linspace(-1, 1, 50)
    out = sparsified("dare_linear", delta, density=0.3, seed=9, rescale=True)
    # The contract: keep where the draw at the entry's flat index is below p·2^32 (the first
    # input's stream of the tensor key 9), then scale by 1/p.
    keep = draws32(input_key(9, 0), 0, 50) < keep_threshold(0.3)
    expected = torch.where(keep, delta * torch.tensor(1 / 0.3, dtype=torch.float32), 0.0)
    torch.testing.assert_close(out, expected)
    assert 5 < int(keep.sum()) < 25


def test_dare_drop_without_rescale_keeps_values() -> None:
    delta = torch.linspace(1, 2, 100)
    out = sparsified("dare_linear", delta, density=0.5, seed=0)
    kept = out != 0
    assert 0 < int(kept.sum()) < 100
    assert torch.equal(out[kept], delta[kept])


def test_dare_drop_edge_densities() -> None:
    delta = t(1, 2, 3)
    assert torch.equal(sparsified("dare_linear", delta, density=1.0, rescale=True), delta)
    assert torch.equal(sparsified("dare_linear", delta, density=0.0, rescale=True), t(0, 0, 0))
    with pytest.raises(ValidationError, match="density"):  # the schema rejects it, at plan time
        sparsified("dare_linear", delta, density=float("nan"), rescale=True)


def test_dare_inputs_draw_independent_masks() -> None:
    delta = torch.ones(4000)
    both = merge(
        "dare_linear",
        [delta, 2 * delta],
        torch.zeros(4000),
        params={"rescale": False},
        model_params=[{"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}],
        seed=3,
    )
    # values 0, 1 (first kept), 2 (second kept), 3 (both): each about a quarter if independent
    counts = torch.bincount(both.long(), minlength=4).double() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)


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
