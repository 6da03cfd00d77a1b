"""nearswap and arcee_fusion: take the other model's values only where they qualify."""

from __future__ import annotations

import pytest
import torch

from alloy.errors import MergeComputationError

from .helpers import assert_rel_close, merge, mergekit_merge, t

# ----------------------------------------------------------------------------------- nearswap


def test_nearswap_by_hand() -> None:
    base = t(1, 1, 1)
    other = base + t(0.5, 2, -0.1)
    # t = 1: weights min(1, 1/|Δ|) = 1, 0.5, 1
    out = merge("nearswap", [other], base, params={"t": 1.0})
    torch.testing.assert_close(out, base + t(0.5, 1.0, -0.1))


def test_nearswap_t_zero_is_the_base_and_a_large_t_the_other_model() -> None:
    base, other = t(1, 2, 3), t(2, 0, 3)
    torch.testing.assert_close(merge("nearswap", [other], base, params={"t": 0.0}), base)
    torch.testing.assert_close(merge("nearswap", [other], base, params={"t": 10.0}), other)


def test_nearswap_needs_one_other_model() -> None:
    with pytest.raises(MergeComputationError, match="exactly one"):
        merge("nearswap", [t(1), t(2)], t(0), params={"t": 1.0})


@pytest.mark.parity
@pytest.mark.parametrize("tt", [1e-4, 0.05, 0.5])
def test_nearswap_parity_with_mergekit(tt: float) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 16, generator=g)
    other = base + 0.1 * torch.randn(16, 16, generator=g)
    ours = merge("nearswap", [other], base, params={"t": tt})
    assert_rel_close(ours, mergekit_merge("nearswap", [other], base, params={"t": tt}))


# ------------------------------------------------------------------------------- arcee_fusion


def fusion_reference(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """A naive arcee_fusion in float32: full sort for the quantiles, KL per row written out."""
    delta = other - base
    p = torch.softmax(other, dim=-1) + 1e-8
    q = torch.softmax(base, dim=-1) + 1e-8
    kl = (p * torch.log(p / q)).sum(dim=-1, keepdim=True)
    importance = delta.abs() * kl
    ordered = importance.flatten().sort().values
    n = ordered.numel()
    q1, q2, q3 = (ordered[int(q * (n - 1))] for q in (0.25, 0.5, 0.75))
    return base + delta * (importance >= q2 + 1.5 * (q3 - q1))


def test_arcee_fusion_keeps_the_outliers_of_one_row() -> None:
    # One row: the KL is one positive number, so importance ranks as |Δ| does. The quantiles
    # of |Δ| = 1..7, 100 at ⌊q·7⌋ are 2, 4, 6: threshold 4 + 1.5·(6 − 2) = 10; only 100 passes.
    base = torch.zeros(1, 8)
    delta = torch.tensor([[1.0, -2.0, 3.0, 4.0, -5.0, 6.0, 7.0, 100.0]])
    out = merge("arcee_fusion", [base + delta], base)
    torch.testing.assert_close(out, torch.tensor([[0.0] * 7 + [100.0]]))


def test_arcee_fusion_equals_the_naive_reference() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 30, generator=g)
    other = base + 0.3 * torch.randn(40, 30, generator=g)
    torch.testing.assert_close(merge("arcee_fusion", [other], base), fusion_reference(other, base))


@pytest.mark.parity
def test_arcee_fusion_is_exact_where_mergekit_subsamples_at_random() -> None:
    """Above 1e6 entries mergekit takes its quantiles from an unseeded random subsample: two
    runs differ. Alloy's quantiles are exact (selection), so its result is the reference."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1100, 1000, generator=g)
    other = base + 0.1 * torch.randn(1100, 1000, generator=g)
    ours = merge("arcee_fusion", [other], base)
    torch.testing.assert_close(ours, fusion_reference(other, base), rtol=0, atol=0)
    runs = []
    for seed in (1, 2):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            runs.append(mergekit_merge("arcee_fusion", [other], base))
    assert not torch.equal(runs[0], runs[1])


@pytest.mark.parity
def test_arcee_fusion_parity_with_mergekit() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(64, 48, generator=g)
    other = base + 0.2 * torch.randn(64, 48, generator=g)
    assert_rel_close(
        merge("arcee_fusion", [other], base), mergekit_merge("arcee_fusion", [other], base)
    )
