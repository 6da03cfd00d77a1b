"""Truncated SVD of a weight delta into LoRA factors, to a fixed rank or a share of the energy.

For ``M [out, in]`` with singular values ``σ_1 ≥ σ_2 ≥ ...`` (Eckart–Young: the best rank-r
approximation in Frobenius norm keeps the r largest)::

    M ≈ B @ A,  B = U_r·diag(√σ_r)  [out, r],  A = diag(√σ_r)·V_rᵀ  [r, in]
    retained energy = Σ_{i≤r} σ_i² / ‖M‖_F²,   ‖M − B@A‖_F = √(Σ_{i>r} σ_i²)

The singular values are split evenly between the factors (balanced, as for training further);
those below rounding level (``σ_1 · max(out, in) · ε_fp32``) are never kept.
The randomized variant (Halko, Martinsson & Tropp 2011, arXiv 0909.4061) projects ``M`` on
``rank + oversample`` random directions, refines with power iterations and takes the SVD of the
small projection; its random matrix comes from the generator it is given (no global RNG).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alloy.errors import UsageError
from alloy.kernels.linalg import svd


@dataclass(frozen=True)
class Factors:
    b: torch.Tensor  # [out, r]
    a: torch.Tensor  # [r, in]
    dropped: float  # share of ‖M‖_F² in the discarded singular values (0.0 for a zero matrix)
    norm: float  # ‖M‖_F

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def energy(self) -> float:
        """Retained share of ‖M‖_F²: Σ_{i≤r} σ_i² / Σ σ_i²."""
        return 1.0 - self.dropped

    @property
    def relative_error(self) -> float:
        """‖M − B@A‖_F / ‖M‖_F = √(Σ_{i>r} σ_i² / Σ σ_i²)."""
        return float(self.dropped**0.5)  # float ** float is typed Any (a complex for x < 0)


def check_rank_energy(rank: int | None, energy: float | None, randomized: bool) -> None:
    """Refuse rank/energy combinations that do not say what to keep."""
    if rank is None and energy is None:
        raise UsageError("give --rank R or --energy E (or both: E with R as the upper bound)")
    if rank is not None and rank < 1:
        raise UsageError(f"--rank must be a positive integer, got {rank}")
    if energy is not None and not 0 < energy <= 1:
        raise UsageError(f"--energy is the share of the spectrum to keep, in (0, 1]; got {energy}")
    if randomized and rank is None:
        raise UsageError("randomized SVD needs --rank (with --energy, as the upper bound)")


def choose_rank(s2: torch.Tensor, total: float, rank: int | None, energy: float | None) -> int:
    """The smallest r whose leading ``s2`` (σ², descending) keep ``energy`` of ``total``,
    capped by ``rank``; ``rank`` itself without ``energy``."""
    n = int(s2.numel())
    cap = n if rank is None else min(rank, n)
    if energy is None or total <= 0:
        return cap
    kept = torch.cumsum(s2.double(), 0) / total
    reached = torch.nonzero(kept >= energy - 1e-12)
    r = int(reached[0]) + 1 if reached.numel() else n
    return min(r, cap)


def _split(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, r: int) -> tuple[torch.Tensor, ...]:
    root = s[:r].sqrt()
    return u[:, :r] * root, root[:, None] * vh[:r]


def truncated_svd(
    m: torch.Tensor,
    *,
    rank: int | None = None,
    energy: float | None = None,
    randomized: bool = False,
    generator: torch.Generator | None = None,
    oversample: int = 10,
    power_iters: int = 2,
) -> Factors:
    """``m ≈ B @ A`` keeping ``rank`` singular values, or the fewest that keep ``energy``."""
    m = m.float()
    total = float(torch.linalg.vector_norm(m, dtype=torch.float64) ** 2)
    if total == 0.0:
        return Factors(m.new_zeros(m.shape[0], 0), m.new_zeros(0, m.shape[1]), 0.0, 0.0)
    if randomized:
        if rank is None:
            raise UsageError("randomized SVD needs a rank (the upper bound with an energy)")
        u, s, vh = _randomized_svd(m, rank + oversample, power_iters, generator)
    else:
        u, s, vh = svd(m)
    s2 = s.double() ** 2
    if not randomized:  # the spectrum is complete: measure against it, not a second sum
        total = float(s2.sum())
    # singular values below rounding level (numpy's matrix_rank tolerance) are not structure
    noise = float(s[0]) * max(m.shape) * torch.finfo(torch.float32).eps
    r = min(choose_rank(s2, total, rank, energy), int((s > noise).sum()))
    b, a = _split(u, s, vh, r)
    if randomized:  # the sketch did not see the whole spectrum: measure the residual itself
        residual = float(torch.linalg.vector_norm(m - b @ a, dtype=torch.float64) ** 2)
        dropped = residual / total
    else:
        dropped = float(s2[r:].sum()) / total
    return Factors(b, a, min(max(dropped, 0.0), 1.0), total**0.5)


def _randomized_svd(
    m: torch.Tensor, q: int, power_iters: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols = m.shape
    q = min(q, rows, cols)
    omega = torch.randn(cols, q, generator=generator, device=m.device, dtype=m.dtype)
    y = m @ omega  # [rows, q]: a sample of M's range
    for _ in range(power_iters):  # (M Mᵀ)^k M Ω sharpens the spectrum; QR keeps it stable
        q_mat, _ = torch.linalg.qr(y)
        z, _ = torch.linalg.qr(m.T @ q_mat)
        y = m @ z
    q_mat, _ = torch.linalg.qr(y)  # orthonormal basis of the range, [rows, q]
    ub, s, vh = svd(q_mat.T @ m)  # [q, cols]
    return q_mat @ ub, s, vh
