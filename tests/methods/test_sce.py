"""sce (FuseChat, arXiv 2408.07990): select by variance, mean-square weights, erase signs."""

from __future__ import annotations

import pytest
import torch

from .helpers import assert_rel_close, merge, mergekit_merge, t


def sce(tvs: list[torch.Tensor], base: torch.Tensor | None = None, **params: float):
    base = torch.zeros_like(tvs[0]) if base is None else base
    return merge("sce", [base + tv for tv in tvs], base, params=params)


def test_by_hand_with_equal_weights() -> None:
    # mean squares 3.5 and 3.5: ω = ½ each; signs of the sum: +, + (a zero sum), −, +
    out = sce([t(1, 2, -3, 0), t(3, -2, -1, 0)])
    torch.testing.assert_close(out, t(2, 2, -2, 0))


def test_by_hand_with_mean_square_weights() -> None:
    # mean squares 5 and 1: ω = 5/6, 1/6; every elected sign is +
    # entry 1: (5/6·2 + 1/6·1) / 1; entries 0, 2, 3: one agreeing model, its own value
    out = sce([t(4, 2, 0, 0), t(-1, 1, 1, 1)])
    torch.testing.assert_close(out, t(4, 11 / 6, 1, 1))


def test_select_keeps_the_positions_of_largest_variance() -> None:
    # variances 0, 25, 1, 2.25: three non-zero, int(0.7 · 3) = 2 kept: entries 1 and 3
    base = t(1, 1, 1, 1)
    out = sce([t(1, 5, 2, 0), t(1, -5, 0, 3)], base, select_topk=0.7)
    torch.testing.assert_close(out, base + t(0, 5, 0, 3))


def test_select_topk_zero_keeps_the_base() -> None:
    base = t(1, 2, 3)
    torch.testing.assert_close(sce([t(1, 0, 2), t(0, 3, 1)], base, select_topk=0.0), base)


def test_weights_do_not_depend_on_the_scale_where_mergekit_turns_them_uniform() -> None:
    """mergekit uses uniform weights when Σ mean(τ_i²) < 1e-6, which task vectors of real
    fine-tunes (entries ~1e-3 and below) fall under; Alloy's weights are scale-free."""
    tvs = [t(4, 2, 0, 0), t(-1, 1, 1, 1)]
    small = [1e-4 * tv for tv in tvs]
    torch.testing.assert_close(sce(small), 1e-4 * t(4, 11 / 6, 1, 1))
    base = torch.zeros(4)
    theirs = mergekit_merge("sce", [base + tv for tv in small], base)
    torch.testing.assert_close(theirs, 1e-4 * t(4, 1.5, 1, 1))  # entry 1: (2 + 1) / 2


@pytest.mark.parity
@pytest.mark.parametrize("select_topk", [1.0, 0.5, 0.1])
def test_parity_with_mergekit(select_topk: float) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(24, 16, generator=g)
    xs = [base + torch.randn(24, 16, generator=g) * s for s in (0.1, 0.2, 0.05)]
    params = {"select_topk": select_topk}
    ours = merge("sce", xs, base, params=params)
    assert_rel_close(ours, mergekit_merge("sce", xs, base, params=params))
