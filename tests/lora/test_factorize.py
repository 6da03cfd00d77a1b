"""Truncated SVD into LoRA factors, on matrices whose spectrum is known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from alloy.errors import AlloyError
from alloy.lora.factorize import check_rank_energy, choose_rank, truncated_svd


def with_spectrum(values: list[float], rows: int = 7, cols: int = 5, seed: int = 0) -> torch.Tensor:
    """Q1 · diag(values) · Q2ᵀ with random orthonormal Q1 [rows, k], Q2 [cols, k]."""
    g = torch.Generator().manual_seed(seed)
    k = len(values)
    q1, _ = torch.linalg.qr(torch.randn(rows, k, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=torch.float64))
    return (q1 * torch.tensor(values, dtype=torch.float64)) @ q2.T


M = with_spectrum([3.0, 2.0, 1.0])  # ‖M‖² = 9 + 4 + 1 = 14


@pytest.mark.parametrize(
    ("keep", "rank", "energy"),
    [
        ({"rank": 1}, 1, 9 / 14),
        ({"rank": 2}, 2, 13 / 14),
        ({"rank": 9}, 3, 1.0),  # capped by the matrix
        ({"energy": 0.6}, 1, 9 / 14),  # 9/14 = 0.643 ≥ 0.6
        ({"energy": 0.9}, 2, 13 / 14),  # 0.643 < 0.9 ≤ 0.929
        ({"energy": 0.95}, 3, 1.0),
        ({"energy": 0.95, "rank": 2}, 2, 13 / 14),  # the rank caps the energy's choice
    ],
)
def test_rank_energy_and_error_by_hand(keep: dict, rank: int, energy: float) -> None:
    f = truncated_svd(M, **keep)
    assert f.rank == rank
    assert f.energy == pytest.approx(energy, abs=1e-6)
    assert f.relative_error == pytest.approx(math.sqrt(1 - energy), abs=1e-6)
    assert f.norm == pytest.approx(math.sqrt(14), rel=1e-6)
    assert f.b.shape == (7, rank) and f.a.shape == (rank, 5)
    error = float((M.float() - f.b @ f.a).norm()) / math.sqrt(14)
    assert error == pytest.approx(math.sqrt(1 - energy), abs=1e-5)  # Eckart–Young
    # balanced split: B and A carry √σ each, so their column / row norms agree
    torch.testing.assert_close(f.b.norm(dim=0), f.a.norm(dim=1), atol=1e-5, rtol=1e-5)


def test_choose_rank_by_hand() -> None:
    s2 = torch.tensor([9.0, 4.0, 1.0])
    assert choose_rank(s2, 14.0, None, None) == 3
    assert choose_rank(s2, 14.0, 2, None) == 2
    assert choose_rank(s2, 14.0, None, 13 / 14) == 2  # exactly reached
    assert choose_rank(s2, 14.0, None, 1.0) == 3


def test_zero_matrix_has_rank_zero() -> None:
    f = truncated_svd(torch.zeros(4, 3), rank=2)
    assert f.rank == 0 and f.energy == 1.0 and f.relative_error == 0.0


def test_randomized_is_exact_on_low_rank_and_seeded() -> None:
    m = with_spectrum([5.0, 4.0, 0.5], rows=60, cols=40, seed=1)

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        f = truncated_svd(m, rank=3, randomized=True, generator=gen, oversample=2)
        assert f.rank == 3 and f.relative_error < 1e-5
        return f.b @ f.a

    torch.testing.assert_close(run(0), m.float(), atol=1e-5, rtol=1e-5)
    assert torch.equal(run(7), run(7))
    f = truncated_svd(m, rank=2, randomized=True, generator=torch.Generator().manual_seed(0))
    assert f.relative_error == pytest.approx(0.5 / math.sqrt(25 + 16 + 0.25), rel=1e-4)


def test_rank_and_energy_are_checked() -> None:
    with pytest.raises(AlloyError, match="--rank R or --energy E"):
        check_rank_energy(None, None, False)
    with pytest.raises(AlloyError, match="positive integer"):
        check_rank_energy(0, None, False)
    with pytest.raises(AlloyError, match=r"\(0, 1\]"):
        check_rank_energy(None, 1.5, False)
    with pytest.raises(AlloyError, match="randomized SVD needs --rank"):
        check_rank_energy(None, 0.9, True)
