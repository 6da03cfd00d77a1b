"""breadcrumbs and breadcrumbs_ties (Davari & Belilovsky 2023): drop outliers and small values."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from alloy.methods.sparsify import outlier_counts

from .helpers import assert_rel_close, merge, mergekit_merge, sparsified, t


def crumbs(
    delta: torch.Tensor, density: float, gamma: float, rescale: bool = False
) -> torch.Tensor:
    return sparsified("breadcrumbs", delta, density=density, gamma=gamma, rescale=rescale)


def test_drops_the_top_gamma_and_the_bottom_keeping_density() -> None:
    # |δ| ranks: 10 entries; density 0.5 keeps 5, gamma 0.2 drops the 2 largest (-10, 9);
    # the 3 smallest (1, -2, 3) go too: kept are 8, -7, 6, -5, 4.
    delta = t(1, -2, 3, 4, -5, 6, -7, 8, 9, -10)
    expected = t(0, 0, 0, 4, -5, 6, -7, 8, 0, 0)
    torch.testing.assert_close(crumbs(delta, 0.5, 0.2), expected, rtol=0, atol=0)


def test_a_gamma_that_rounds_to_nothing_drops_no_outlier() -> None:
    # int(0.05 · 10) = 0: keep the 5 largest, as TIES trimming does. mergekit 0.1.4 and older
    # zeroed the whole task vector here (indices[n_bot:-0] is empty).
    delta = t(1, -2, 3, 4, -5, 6, -7, 8, 9, -10)
    expected = t(0, 0, 0, 0, 0, 6, -7, 8, 9, -10)
    torch.testing.assert_close(crumbs(delta, 0.5, 0.05), expected, rtol=0, atol=0)
    torch.testing.assert_close(crumbs(delta, 0.5, 0.0), expected, rtol=0, atol=0)


@pytest.mark.parity
def test_a_positive_density_keeps_at_least_one_entry_where_mergekit_keeps_none() -> None:
    # int(0.3 · 3) = 0: mergekit 0.1.5 zeroes the task vector; Alloy keeps the largest entry,
    # as both tools do for TIES.
    delta = t(1, -2, 3)
    torch.testing.assert_close(crumbs(delta, 0.3, 0.01), t(0, 0, 3))
    from mergekit.sparsify import magnitude_outliers

    torch.testing.assert_close(magnitude_outliers(delta, 0.3, gamma=0.01), t(0, 0, 0))


def test_the_kept_share_takes_precedence_over_gamma() -> None:
    # density 0.9 keeps 9 of 10, so only one outlier can go although gamma asks for 5.
    assert outlier_counts(10, 0.9, 0.5) == (1, 9)
    delta = t(1, -2, 3, 4, -5, 6, -7, 8, 9, -10)
    torch.testing.assert_close(crumbs(delta, 0.9, 0.5), delta * (delta.abs() < 10))
    # density 1 keeps everything, whatever gamma
    torch.testing.assert_close(crumbs(delta, 1.0, 0.5), delta)


def test_equal_magnitudes_keep_the_lowest_indices() -> None:
    delta = t(2, -2, 2, 2, 1, 5)
    # 6 entries: density 0.5 keeps 3 and gamma 0.2 drops int(1.2) = 1 outlier, the 5. The
    # ranks after it are the four |2| in index order, so indices 0, 1 and 2 are kept.
    torch.testing.assert_close(crumbs(delta, 0.5, 0.2), t(2, -2, 2, 0, 0, 0))


def test_rescale_matches_the_l1_norm() -> None:
    delta = t(1, -2, 3, 4, -5, 6, -7, 8, 9, -10)
    out = crumbs(delta, 0.5, 0.2, rescale=True)
    assert float(out.abs().sum()) == pytest.approx(float(delta.abs().sum()))
    torch.testing.assert_close(out, crumbs(delta, 0.5, 0.2) * (55 / 30))


def test_breadcrumbs_is_task_arithmetic_of_the_trimmed_vectors() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, 10, generator=g)
    xs = [base + torch.randn(10, 10, generator=g) for _ in range(2)]
    mps = [{"weight": 0.7, "density": 0.6, "gamma": 0.1}, {"weight": 0.4, "density": 0.3}]
    expected = (
        base
        + 0.5 * 0.7 * crumbs(xs[0] - base, 0.6, 0.1)
        + 0.5 * 0.4 * crumbs(xs[1] - base, 0.3, 0.01)
    )
    out = merge("breadcrumbs", xs, base, params={"lambda": 0.5}, model_params=mps)
    torch.testing.assert_close(out, expected)


def test_breadcrumbs_ties_with_gamma_zero_is_ties() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(8, 8, generator=g)
    xs = [base + torch.randn(8, 8, generator=g) for _ in range(3)]
    mps = [{"weight": w, "density": 0.4} for w in (0.5, 1.0, 0.7)]
    out = merge(
        "breadcrumbs_ties",
        xs,
        base,
        params={"normalize": True},
        model_params=[{**m, "gamma": 0.0} for m in mps],
    )
    torch.testing.assert_close(out, merge("ties", xs, base, model_params=mps))


def test_invalid_gamma_is_an_error() -> None:
    with pytest.raises(ValidationError, match="gamma"):  # the schema rejects it, at plan time
        crumbs(t(1, 2, 3), 0.5, 1.5)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["breadcrumbs", "breadcrumbs_ties"])
@pytest.mark.parametrize(
    ("density", "gamma", "params"),
    [(0.9, 0.01, {}), (0.5, 0.1, {"rescale": True}), (0.3, 0.5, {"lambda": 0.7}), (0.8, 0.0, {})],
)
def test_parity_with_mergekit(name: str, density: float, gamma: float, params: dict) -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(32, 24, generator=g)
    xs = [base + torch.randn(32, 24, generator=g) for _ in range(3)]
    mps = [{"weight": w, "density": density, "gamma": gamma} for w in (1.0, 0.5, 0.8)]
    ours = merge(name, xs, base, params=params, model_params=mps)
    theirs = mergekit_merge(name, xs, base, params=params, model_params=mps)
    assert_rel_close(ours, theirs)
