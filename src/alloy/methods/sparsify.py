"""Sparsifying task vectors, and TIES sign election: the steps shared by the task-arithmetic family.

- Magnitude trimming (TIES "trim", Yadav et al. 2023, arXiv 2306.01708): keep the
  ``k = int(density · numel)`` entries of largest ``|δ|`` of one tensor, zero the rest.
- DARE drop (Yu et al. 2023, arXiv 2311.03099): keep each entry with probability ``p = density``
  and divide the survivors by ``p``, so ``E[drop(δ)] = δ``.
- Outlier trimming (Model Breadcrumbs, Davari & Belilovsky 2023, arXiv 2312.06795): drop the
  ``int(gamma · numel)`` largest ``|δ|`` and then the smallest, keeping ``int(density · numel)``.
- Magnitude-ranked drop (DELLA's MagPrune, Deep et al. 2024, arXiv 2406.11617): keep each entry
  with a probability that grows with its magnitude rank in its row, divide survivors by it.
- Sign election (TIES "elect"): per coordinate, the sign of the summed weighted task vectors;
  an entry takes part in the merge only if its sign agrees (zeros never agree).

The whole-tensor methods (`alloy.methods.ties`, ``dare``, ``breadcrumbs``, ``della``) trim with
`top_magnitude_mask`; the streamed accelerator (`alloy.methods.streamed.task_vectors`) finds the
same entries through thresholds (`alloy.methods.streamed.select`). This module holds the rules
both share (how many entries are kept), MagPrune, and sign election.
All functions are pure: they neither modify their arguments nor touch the global RNG.
"""

from __future__ import annotations

import torch

from alloy.kernels.random import uniform


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


def outlier_counts(numel: int, density: float, gamma: float) -> tuple[int, int]:
    """Breadcrumbs: (entries dropped from the top, entries kept) of a tensor of ``numel``.

    ``kept = max(1, int(density · numel))`` as for TIES; the top ``int(gamma · numel)`` are dropped
    first, reduced when the kept share would not fit below them, and the rest from the bottom.
    """
    kept = magnitude_keep_count(numel, density)
    top = min(int(gamma * numel), numel - kept)
    return top, kept


# Elements ranked at once by magprune: bounds the int64 sort indices to 64 MiB.
_RANK_BLOCK = 8 * 1024 * 1024


def magprune(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    *,
    rescale: bool,
    key: int,
    start: int = 0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """DELLA's MagPrune: keep ``δ_j`` with probability ``p_j``, divide survivors by ``p_j``.

    Within each row (the last dimension; a 1-D tensor is one row) entries are ranked by
    ``|δ|``, ``r_j = rank / (n − 1)`` in [0, 1] (0 the smallest; equal magnitudes by index;
    0.5 for a one-entry row), and ``p_j = density − ε + 2ε·r_j``. Entry ``j`` is kept when the
    draw of stream ``key`` at its flat index (``start`` + its index in ``delta``) is below
    ``p_j`` (`alloy.kernels.random`). Written into ``out`` when given (it may be ``delta``
    itself: each block is ranked before it is overwritten). The parameters are validated by
    the schema (`alloy.methods.task_arithmetic.DellaModelParams`): ``density ± epsilon`` inside
    (0, 1) when 0 < density < 1.
    """
    if density >= 1:
        return delta if out is None else out.copy_(delta)
    if density == 0 or delta.numel() == 0:
        return torch.zeros_like(delta) if out is None else out.zero_()
    width = delta.shape[-1] if delta.dim() > 0 else 1
    rows = delta.reshape(-1, width)  # [rows, n], a view
    target = torch.empty_like(rows) if out is None else out.view(-1, width)
    per_block = max(1, _RANK_BLOCK // max(width, 1))
    ranks = torch.arange(width, dtype=rows.dtype, device=rows.device)
    for first in range(0, rows.shape[0], per_block):
        block = rows[first : first + per_block]
        # Stable: equal magnitudes rank by column index, so the ranks are deterministic.
        order = torch.sort(block.abs(), dim=-1, stable=True).indices  # [b, n]
        rank = torch.empty_like(block)
        rank.scatter_(-1, order, ranks.expand_as(block))  # inverse permutation, no second sort
        del order
        if width > 1:
            prob = rank.mul_(2 * epsilon / (width - 1)).add_(density - epsilon)
        else:
            prob = rank.fill_(density)
        draws = uniform(key, start + first * width, block.numel(), block.device)
        keep = draws.view(block.shape) < prob
        kept = torch.mul(block, keep, out=target[first : first + per_block])
        if rescale:
            # Deliberate: the paper's unbiased 1/p_j per entry, not mergekit's L1-norm matching.
            kept.div_(prob)
    return target.view(delta.shape)


def elect_sign(weighted: torch.Tensor) -> torch.Tensor:
    """TIES elect: ``γ = +1 where Σ_i W_i ≥ 0 else −1``, for ``weighted`` of shape [n, *shape]."""
    total = weighted.sum(dim=0)  # [*shape]
    return torch.where(total >= 0, 1.0, -1.0).to(weighted.dtype)


def agrees_with(weighted: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Boolean mask [n, *shape] of entries whose sign is the elected one; zeros never agree."""
    return torch.sign(weighted) == sign
