"""tsv (TSV-M, arXiv 2412.00081), iso_c and iso_cts (arXiv 2502.04959): SVD per weight matrix.

Expected values are computed by hand on diagonal or 2×2 matrices, or by a naive reference in
float64 that orthogonalizes with ``A (AᵀA)^(-1/2)`` (an eigendecomposition) instead of the
SVD-based polar factor Alloy uses; invariants are the papers': the decorrelated bases are
orthonormal (so TSV's merged matrix has exactly the kept singular values) and Iso's spectrum
is flat.
"""

from __future__ import annotations

import math

import pytest
import torch

from alloy.methods import get_method
from alloy.methods.spectral import subspace_sizes

from .helpers import merge


def run(name: str, tvs: list[torch.Tensor], base: torch.Tensor | None = None, **params):
    base = torch.zeros_like(tvs[0]) if base is None else base
    return merge(name, [base + tv for tv in tvs], base, params=params)


def random_tvs(seed: int, n: int, shape: tuple[int, int]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def orthonormalize(a: torch.Tensor) -> torch.Tensor:
    """``A (AᵀA)^(-1/2)`` for a tall ``A`` of full column rank (float64)."""
    evals, evecs = torch.linalg.eigh(a.T @ a)
    return a @ (evecs @ torch.diag(evals.rsqrt()) @ evecs.T)


def top_triplets(tv: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(tv.double(), full_matrices=False)
    return u[:, :k], s[:k], vh[:k]


def tsv_reference(tvs: list[torch.Tensor], k: int) -> torch.Tensor:
    parts = [top_triplets(tv, k) for tv in tvs]
    u = torch.cat([p[0] for p in parts], dim=1)
    s = torch.cat([p[1] for p in parts])
    v = torch.cat([p[2] for p in parts], dim=0).T
    return (orthonormalize(u) @ torch.diag(s) @ orthonormalize(v).T).float()


def iso_cts_reference(tvs: list[torch.Tensor], fraction: float) -> torch.Tensor:
    total = sum(tv.double() for tv in tvs)
    rank, n = min(total.shape), len(tvs)
    common, per_task = subspace_sizes(rank, n, fraction)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    uc = u[:, :common]
    parts = [top_triplets(tv.double() - uc @ uc.T @ tv.double(), per_task) for tv in tvs]
    u_all = torch.cat([uc, *(p[0] for p in parts)], dim=1)
    s_all = torch.cat([s[:common], *(p[1] for p in parts)])
    v_all = torch.cat([vh[:common], *(p[2] for p in parts)], dim=0).T
    return (s_all.mean() * orthonormalize(u_all) @ orthonormalize(v_all).T).float()


# ---------------------------------------------------------------------------------------- tsv


def test_tsv_keeps_each_task_top_direction() -> None:
    # Two tasks, rank 2: one triplet each. τ1 = diag(3, 1) keeps 3·e1e1ᵀ, τ2 = diag(0, 2)
    # keeps 2·e2e2ᵀ; the bases [e1, e2] are already orthonormal: diag(3, 2).
    # (Task arithmetic gives diag(3, 3).)
    out = run("tsv", [torch.diag(torch.tensor([3.0, 1.0])), torch.diag(torch.tensor([0.0, 2.0]))])
    torch.testing.assert_close(out, torch.diag(torch.tensor([3.0, 2.0])))


def test_tsv_decorrelates_overlapping_directions() -> None:
    # τ1 = e1e1ᵀ and τ2 = wwᵀ with w = (e1 + e2)/√2, both of singular value 1: the bases
    # [e1, w] are replaced by the nearest orthogonal matrix P, and P·I·Pᵀ = I.
    # (Task arithmetic gives [[1.5, 0.5], [0.5, 0.5]].)
    w = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    tv1, tv2 = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.outer(w, w)
    torch.testing.assert_close(run("tsv", [tv1, tv2]), torch.eye(2))


def test_tsv_matches_the_reference() -> None:
    tvs = random_tvs(0, 3, (12, 9))  # rank 9, k = int(9/3) = 3 per task
    torch.testing.assert_close(run("tsv", tvs), tsv_reference(tvs, 3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("n", "fraction", "k"), [(3, None, 2), (2, 0.25, 2), (2, 0.5, 4)])
def test_tsv_singular_values_are_the_kept_ones(n: int, fraction: float | None, k: int) -> None:
    """The combined bases are orthonormal, so the merged matrix's singular values are exactly
    the kept singular values of the task matrices (rank 8)."""
    tvs = random_tvs(1, n, (10, 8))
    params = {} if fraction is None else {"rank_fraction": fraction}
    merged = run("tsv", tvs, **params)
    kept = torch.cat([torch.linalg.svdvals(tv)[:k] for tv in tvs]).sort(descending=True).values
    got = torch.linalg.svdvals(merged)
    torch.testing.assert_close(got[: n * k], kept, rtol=1e-4, atol=1e-5)
    assert all(float(v) < 1e-4 for v in got[n * k :])


def test_tsv_of_one_task_at_full_rank_is_the_task_vector() -> None:
    tv = random_tvs(2, 1, (7, 5))[0]
    base = torch.randn(7, 5)
    torch.testing.assert_close(run("tsv", [tv], base), base + tv, rtol=1e-5, atol=1e-5)


def test_tsv_alpha_scales_the_merged_matrix() -> None:
    tvs = random_tvs(3, 2, (6, 6))
    base = torch.ones(6, 6)
    full = run("tsv", tvs, base)
    torch.testing.assert_close(run("tsv", tvs, base, alpha=0.5), base + 0.5 * (full - base))


# -------------------------------------------------------------------------------------- iso_c


def test_iso_c_by_hand() -> None:
    # Σ τ = [[0, 3], [1, 0]] = U diag(3, 1) Vᵀ with U Vᵀ = [[0, 1], [1, 0]]; mean(S) = 2
    tvs = [torch.tensor([[0.0, 2.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])]
    torch.testing.assert_close(run("iso_c", tvs), torch.tensor([[0.0, 2.0], [2.0, 0.0]]))


def test_iso_c_spectrum_is_flat_at_the_mean_singular_value() -> None:
    tvs = random_tvs(4, 3, (9, 14))
    merged = run("iso_c", tvs, alpha=1.5)
    mean = float(torch.linalg.svdvals(sum(tvs)).mean())
    torch.testing.assert_close(
        torch.linalg.svdvals(merged), torch.full((9,), 1.5 * mean), rtol=1e-4, atol=1e-4
    )
    # the singular directions are those of the sum: merged·mergedᵀ ∝ I, merged ∝ polar(Σ τ)
    u, _, vh = torch.linalg.svd(sum(tvs), full_matrices=False)
    torch.testing.assert_close(merged, 1.5 * mean * (u @ vh), rtol=1e-4, atol=1e-4)


def low_rank_tvs(seed: int, n: int, shape: tuple[int, int], rank: int) -> list[torch.Tensor]:
    """Task matrices of rank ``rank``, as a LoRA delta B·A is."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape[0], rank, generator=g) @ torch.randn(rank, shape[1], generator=g)
        for _ in range(n)
    ]


@pytest.mark.parametrize("name", ["iso_c", "iso_cts"])
def test_low_rank_task_matrices_are_flattened_within_their_rank(name: str) -> None:
    # two rank-2 task matrices in 16×12: the sum has rank 4. Flattening over all 12 singular
    # directions would add 8 arbitrary ones (singular value 0) at the mean value.
    tvs = low_rank_tvs(7, 2, (16, 12), 2)
    merged = run(name, tvs)
    got = torch.linalg.svdvals(merged)
    assert float(got[4:].max()) < 1e-4 * float(got[0])  # still rank 4
    torch.testing.assert_close(got[:4], got[:4].mean().expand(4), rtol=1e-4, atol=1e-5)
    if name == "iso_c":  # mean of the 4 nonzero singular values, along the sum's directions
        u, sv, vh = torch.linalg.svd(sum(tvs), full_matrices=False)
        torch.testing.assert_close(merged, sv[:4].mean() * u[:, :4] @ vh[:4], rtol=1e-4, atol=1e-4)


def test_a_matrix_no_task_moved_stays_the_base() -> None:
    base = torch.randn(6, 5)
    for name in ("iso_c", "iso_cts"):
        assert torch.equal(run(name, [torch.zeros(6, 5)] * 2, base=base), base)


# ------------------------------------------------------------------------------------ iso_cts


@pytest.mark.parametrize(
    ("rank", "n", "fraction", "sizes"),
    [
        (8, 3, 0.8, (5, 1)),
        (7, 2, 0.0, (1, 3)),
        (3, 2, 1 / 3, (1, 1)),
        (2, 2, 0.5, (2, 0)),
        (4096, 2, 0.8, (3276, 410)),
    ],
)
def test_iso_cts_subspace_sizes(rank: int, n: int, fraction: float, sizes: tuple[int, int]):
    assert subspace_sizes(rank, n, fraction) == sizes
    common, per_task = sizes
    assert common + n * per_task == rank and common >= 0


def test_iso_cts_keeps_a_task_direction_the_sum_cancels() -> None:
    # τ1 = diag(5, 1, 0), τ2 = diag(0, −1, 2): Σ = diag(5, 0, 2) lost task 1's e2.
    # Rank 3, two tasks, fraction 1/3: one common direction (e1, σ 5), one per task:
    # τ1⊥ = diag(0, 1, 0) gives e2 (σ 1), τ2⊥ = diag(0, −1, 2) gives e3 (σ 2).
    # Flat spectrum mean(5, 1, 2) = 8/3 over e1, e2, e3: (8/3)·I.
    tvs = [torch.diag(torch.tensor([5.0, 1.0, 0.0])), torch.diag(torch.tensor([0.0, -1.0, 2.0]))]
    out = run("iso_cts", tvs, common_space_fraction=1 / 3)
    torch.testing.assert_close(out, 8 / 3 * torch.eye(3))


def test_iso_cts_matches_the_reference_and_is_flat() -> None:
    tvs = random_tvs(5, 3, (16, 12))
    merged = run("iso_cts", tvs)  # rank 12: 9 common directions, 1 per task
    torch.testing.assert_close(merged, iso_cts_reference(tvs, 0.8), rtol=1e-4, atol=1e-4)
    got = torch.linalg.svdvals(merged)
    torch.testing.assert_close(got, got.mean().expand(12), rtol=1e-4, atol=1e-5)


def test_iso_cts_with_the_whole_common_space_is_iso_c() -> None:
    tvs = random_tvs(6, 2, (10, 6))
    torch.testing.assert_close(run("iso_cts", tvs, common_space_fraction=1.0), run("iso_c", tvs))


# --------------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize("name", ["tsv", "iso_c", "iso_cts"])
def test_vectors_and_embeddings_fall_back_to_the_mean_task_vector(name: str) -> None:
    g = torch.Generator().manual_seed(7)
    base = torch.randn(5, generator=g)
    tvs = [torch.randn(5, generator=g) for _ in range(3)]
    expected = base + 0.8 * sum(tvs) / 3  # task arithmetic, weights 1/N, λ = α
    torch.testing.assert_close(run(name, tvs, base, alpha=0.8), expected)

    spec = get_method(name)
    assert spec.embedding_fn is not None
    matrix = torch.randn(6, 4, generator=g)
    xs = [matrix + torch.randn(6, 4, generator=g) for _ in range(2)]
    params = spec.params.model_validate({"alpha": 0.8})
    out = spec.fn_for(embedding=True)(xs, matrix, params, [], None)
    torch.testing.assert_close(out, matrix + 0.8 * ((xs[0] - matrix) + (xs[1] - matrix)) / 2)
    assert not torch.allclose(spec.fn_for(embedding=False)(xs, matrix, params, [], None), out)


# ------------------------------------------------------------- SVD that does not converge


def _float32_svd_fails(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """Make LAPACK's float32 SVD fail as it does on some rank-deficient task matrices (seen on
    the 1.1B benchmark's layers.0.mlp.down_proj under Iso-CTS); float64 still works."""
    real = torch.linalg.svd
    calls: list[torch.dtype] = []

    def flaky(a: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(a.dtype)
        if a.dtype != torch.float64:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    return calls


def test_svd_retries_in_float64_and_keeps_the_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    from alloy.kernels.linalg import svd

    a = random_tvs(8, 1, (9, 7))[0]
    want = torch.linalg.svdvals(a.double())
    calls = _float32_svd_fails(monkeypatch)
    u, s, vh = svd(a)
    assert calls == [torch.float32, torch.float64]
    assert u.dtype == s.dtype == vh.dtype == torch.float32
    assert u.shape == (9, 7) and vh.shape == (7, 7)
    torch.testing.assert_close(s.double(), want)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, a, rtol=1e-5, atol=1e-5)


def test_svd_reraises_when_float64_fails_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from alloy.kernels.linalg import svd

    def broken(a: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", broken)
    with pytest.raises(torch.linalg.LinAlgError):
        svd(torch.eye(3))


@pytest.mark.parametrize("name", ["tsv", "iso_c", "iso_cts"])
def test_spectral_methods_survive_a_float32_svd_that_does_not_converge(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tvs = random_tvs(9, 3, (16, 12))
    want = run(name, tvs)
    calls = _float32_svd_fails(monkeypatch)
    torch.testing.assert_close(run(name, tvs), want, rtol=1e-4, atol=1e-4)
    assert torch.float64 in calls
