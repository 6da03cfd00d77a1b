"""Sparsifying task vectors, and TIES sign election: the steps shared by the task-arithmetic family.

- Magnitude trimming (TIES "trim", Yadav et al. 2023, arXiv 2306.01708): keep the
  ``k = int(density · numel)`` entries of largest ``|δ|`` of one tensor, zero the rest.
- DARE drop (Yu et al. 2023, arXiv 2311.03099): keep each entry with probability ``p = density``
  and divide the survivors by ``p``, so ``E[drop(δ)] = δ``.
- Sign election (TIES "elect"): per coordinate, the sign of the summed weighted task vectors;
  an entry takes part in the merge only if its sign agrees (zeros never agree).

All functions are pure: they neither modify their arguments nor touch the global RNG.
"""

from __future__ import annotations

import math

import torch

from alloy.errors import MergeComputationError

# Below this L1 norm a tensor counts as zero and is not rescaled (mergekit's tolerance).
_L1_EPS = 1e-7


def check_density(density: float, method: str) -> None:
    """Reject a density that is negative or NaN; values above 1 mean "keep everything"."""
    # Deliberate: an error; mergekit keeps nothing (trim) or crashes in torch.bernoulli (DARE).
    if math.isnan(density) or density < 0:
        raise MergeComputationError(
            f"{method}: density must be a fraction in [0, 1] (the share of each task vector "
            f"kept), got {density!r}; fix the model's `density` parameter"
        )


def magnitude_keep_count(numel: int, density: float) -> int:
    """How many entries magnitude trimming keeps: ``int(density · numel)``, clamped to [1, numel].

    A positive density keeps at least one entry of a non-empty tensor, as mergekit 0.1.5 does;
    density 0 keeps nothing and density ≥ 1 keeps everything.
    """
    if numel == 0 or density <= 0:
        return 0
    if density >= 1:
        return numel
    return max(1, int(density * numel))


def top_magnitude_mask(delta: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (shape of ``delta``) of exactly ``k`` entries with the largest ``|δ|``.

    Among entries equal to the threshold magnitude, the lowest flat (row-major) indices win.
    """
    n = delta.numel()
    if k >= n:
        return torch.ones_like(delta, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(delta, dtype=torch.bool)
    magnitude = delta.abs().reshape(-1)  # [n]
    # Deliberate: an O(n) selection of the k-th largest |δ| (kthvalue), not mergekit's full
    # O(n log n) argsort; ties at the threshold resolve deterministically (lowest index first).
    threshold = torch.kthvalue(magnitude, n - k + 1).values
    keep = magnitude > threshold  # fewer than k entries, since the threshold itself is excluded
    missing = k - int(keep.sum())
    at_threshold = torch.nonzero(magnitude == threshold).reshape(-1)  # ascending flat indices
    keep[at_threshold[:missing]] = True
    return keep.reshape(delta.shape)


def match_l1_norm(kept: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Scale ``kept`` so its L1 norm equals that of ``original`` (unchanged if either is ~0)."""
    before = original.abs().sum()
    after = kept.abs().sum()
    if before < _L1_EPS or after < _L1_EPS:
        return kept
    return kept * (before / after)


def trim_magnitude(
    delta: torch.Tensor, density: float, *, rescale: bool, method: str = "ties"
) -> torch.Tensor:
    """TIES trim: ``δ ⊙ top_k(|δ|)`` with ``k = int(density · numel)``.

    With ``rescale`` the survivors are scaled to the L1 norm of ``δ`` (mergekit's ``rescale``
    on a magnitude-trimmed method). Per tensor, so not elementwise.
    """
    check_density(density, method)
    if density >= 1:
        return delta
    kept = delta * top_magnitude_mask(delta, magnitude_keep_count(delta.numel(), density))
    return match_l1_norm(kept, delta) if rescale else kept


def dare_drop(
    delta: torch.Tensor,
    density: float,
    *,
    rescale: bool,
    generator: torch.Generator | None,
    method: str = "dare",
) -> torch.Tensor:
    """DARE: ``m ⊙ δ / p`` with ``m_j ~ Bernoulli(p)``, ``p = density`` (``/ p`` only with rescale).

    The mask is ``rand < p`` drawn from ``generator``, so it is reproducible and elementwise:
    the entry at index j depends only on ``δ_j`` and on the j-th draw of the stream.
    """
    check_density(density, method)
    if density >= 1:
        return delta
    if density == 0:
        return torch.zeros_like(delta)
    if generator is None:
        raise MergeComputationError(
            f"{method} drops entries at random and needs a seeded torch.Generator, got None "
            "(the executor passes one for randomized methods)"
        )
    # Deliberate: drawn from the per-tensor generator, not the global RNG as mergekit does.
    keep = torch.rand(delta.shape, generator=generator, device=delta.device) < density
    dropped = delta * keep
    # Deliberate: DARE's unbiased 1/p rescale, not mergekit's L1-norm matching of the whole tensor.
    return dropped / density if rescale else dropped


def elect_sign(weighted: torch.Tensor) -> torch.Tensor:
    """TIES elect: ``γ = +1 where Σ_i W_i ≥ 0 else −1``, for ``weighted`` of shape [n, *shape]."""
    total = weighted.sum(dim=0)  # [*shape]
    return torch.where(total >= 0, 1.0, -1.0).to(weighted.dtype)


def agrees_with(weighted: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Boolean mask [n, *shape] of entries whose sign is the elected one; zeros never agree."""
    return torch.sign(weighted) == sign
