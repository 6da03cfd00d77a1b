"""Data-free merging in the singular-value domain of each weight matrix: TSV, Iso-C, Iso-CTS.

Each method works per 2-D weight matrix on the task matrices ``τ_i = x_i − base`` (N of them)
and returns ``base + α · M``. ``r = min(rows, cols)``; ``polar(A) = P Qᵀ`` for ``A = P Σ Qᵀ``
is the nearest matrix with orthonormal columns (rows, for a wide ``A``).

Task Singular Vectors, TSV-M (Gargiulo et al., CVPR 2025, arXiv 2412.00081)::

    τ_i = U_i S_i V_iᵀ,  keep the top k = max(1, int(rank_fraction · r)) triplets of each
    U = [U_1,k … U_N,k],  S = [S_1,k … S_N,k],  V = [V_1,k … V_N,k]     concatenated
    M = polar(U) · diag(S) · polar(Vᵀ)                                   decorrelated bases

Isotropic merging, Iso-C (Marczak et al., ICML 2025, arXiv 2502.04959)::

    Σ_i τ_i = U S Vᵀ,   M = mean(S) · U Vᵀ                              a flat spectrum

Iso-CTS (same paper): the top ``k_c`` directions of ``Σ_i τ_i`` (the common subspace), plus the
top ``s = (r − k_c)/N`` directions of each ``τ_i`` with the common subspace projected out::

    k_c = r − N·s,  s = round((r − int(f·r)) / N)    f = common_space_fraction
    τ_i⊥ = τ_i − U_c U_cᵀ τ_i,   τ_i⊥ = U_i S_i V_iᵀ
    U = [U_1,s … U_N,s, U_c],  S likewise,  V likewise
    M = mean(S) · polar(U) · polar(Vᵀ)

Iso-C and Iso-CTS keep only the directions of a task matrix's numerical rank (singular values
above ``max(rows, cols) · ε · σ_max``, ε of float32). The paper's task matrices are full rank;
a low-rank one (the sum of two rank-8 LoRA deltas is rank 16) has singular directions whose
values are zero and whose vectors are arbitrary, and flattening the spectrum over them would add
that many random directions at the mean singular value (Deliberate; tested).

1-D tensors (norms, biases), tensors of other ranks and token embeddings / output heads
fall back to task arithmetic as the papers do: ``base + α · mean_i(τ_i)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from alloy.errors import MergeComputationError
from alloy.kernels.linalg import svd
from alloy.methods.bounds import Scale
from alloy.methods.registry import NoParams, Params, method

_TSV = (
    "Gargiulo et al. 2025, Task Singular Vectors: Reducing Task Interference in Model Merging "
    "(CVPR 2025, arXiv 2412.00081)"
)
_ISO = (
    "Marczak et al. 2025, No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces (ICML 2025, arXiv 2502.04959)"
)


class SpectralParams(Params):
    alpha: Scale = 1.0  # scale of the merged task matrix


class TsvParams(SpectralParams):
    # Share of each task matrix's singular triplets kept; None: 1/N, so the N sets fill the rank.
    rank_fraction: float | None = Field(default=None, gt=0, le=1)


class IsoCtsParams(SpectralParams):
    common_space_fraction: float = Field(default=0.8, ge=0, le=1)  # of the rank, before rounding


def _check_base(
    name: str, inputs: Sequence[torch.Tensor], base: torch.Tensor | None
) -> torch.Tensor:
    if base is None:
        raise MergeComputationError(f"{name} merges task vectors and needs a base model")
    if not inputs:
        raise MergeComputationError(f"{name} needs at least one model besides the base")
    return base


def mean_task_vector(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SpectralParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The fallback: ``base + α · mean_i(x_i − base)`` (task arithmetic, weights 1/N, λ = α)."""
    base = _check_base("the fallback to task arithmetic", inputs, base)
    merged = torch.zeros_like(base)
    for x in inputs:
        merged.add_(x).sub_(base)
    return merged.mul_(params.alpha / len(inputs)).add_(base)


def _is_matrix(base: torch.Tensor) -> bool:
    return base.dim() == 2 and base.numel() > 0


def polar(a: torch.Tensor) -> torch.Tensor:
    """``P Qᵀ`` for ``a = P Σ Qᵀ``: the nearest matrix with orthonormal columns (or rows)."""
    p, _, qh = svd(a)
    return p @ qh


def numerical_rank(s: torch.Tensor, shape: tuple[int, ...]) -> int:
    """How many singular values (descending) ``s`` of a matrix of ``shape`` are above rounding
    level: ``max(shape) · ε · s[0]`` (numpy's matrix_rank tolerance, ε of float32)."""
    if s.numel() == 0 or float(s[0]) == 0:
        return 0
    tol = max(shape) * torch.finfo(torch.float32).eps * float(s[0])
    return int((s > tol).sum())


def _task_sum(inputs: Sequence[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    total = torch.zeros_like(base)
    for x in inputs:
        total.add_(x).sub_(base)
    return total  # Σ_i τ_i


def _summed_spectrum(
    inputs: Sequence[torch.Tensor], base: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, S, Vᵀ`` of ``Σ_i τ_i`` cut to its numerical rank (empty when no task moved it).
    Deliberate: a flat spectrum then spans the task matrix's rank, not its arbitrary null
    space (a low-rank LoRA delta would otherwise be filled up with noise directions)."""
    total = _task_sum(inputs, base)
    u, s, vh = svd(total)
    r = numerical_rank(s, tuple(total.shape))
    return u[:, :r], s[:r], vh[:r]


def _flat(
    u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, alpha: float, base: torch.Tensor
) -> torch.Tensor:
    """``base + α · mean(S) · U Vᵀ``: the directions of ``U S Vᵀ`` with a flat spectrum."""
    return (u @ vh).mul_(s.mean() * alpha).add_(base)


@method(
    "tsv",
    params=TsvParams,
    base="required",
    min_models=1,
    paper=_TSV,
    summary="Per weight matrix, keep each task vector's top singular directions and "
    "orthogonalize the combined bases before summing (TSV-M).",
    embedding_fn=mean_task_vector,
    overhead=3.5,
)
def tsv(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TsvParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """TSV-M: low-rank task matrices with decorrelated singular bases (module docstring)."""
    base = _check_base("tsv", inputs, base)
    if not _is_matrix(base):
        return mean_task_vector(inputs, base, params, model_params, generator)
    n = len(inputs)
    rows, cols = base.shape
    rank = min(rows, cols)
    fraction = params.rank_fraction if params.rank_fraction is not None else 1 / n
    k = max(1, int(rank * fraction))
    u_cat = base.new_empty((rows, n * k))  # [rows, N·k]
    s_cat = base.new_empty((n * k,))
    v_cat = base.new_empty((n * k, cols))  # [N·k, cols]
    for i, x in enumerate(inputs):
        u, s, vh = svd(x - base)
        u_cat[:, i * k : (i + 1) * k] = u[:, :k]
        s_cat[i * k : (i + 1) * k] = s[:k]
        v_cat[i * k : (i + 1) * k] = vh[:k]
        del u, s, vh
    merged = polar(u_cat).mul_(s_cat)  # polar(U) · diag(S)
    del u_cat
    merged = merged @ polar(v_cat)
    return merged.mul_(params.alpha).add_(base)


@method(
    "iso_c",
    params=SpectralParams,
    base="required",
    min_models=1,
    paper=_ISO,
    summary="Per weight matrix, sum the task vectors and flatten the singular-value spectrum "
    "to its mean (Iso-C).",
    embedding_fn=mean_task_vector,
    overhead=3.0,
)
def iso_c(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SpectralParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Iso-C: ``base + α · mean(S) · U Vᵀ`` for ``Σ_i τ_i = U S Vᵀ``."""
    base = _check_base("iso_c", inputs, base)
    if not _is_matrix(base):
        return mean_task_vector(inputs, base, params, model_params, generator)
    u, s, vh = _summed_spectrum(inputs, base)
    if s.numel() == 0:
        return base.clone()  # no task moved this matrix
    return _flat(u, s, vh, params.alpha, base)


def subspace_sizes(rank: int, n: int, common_space_fraction: float) -> tuple[int, int]:
    """Iso-CTS: (common directions k_c, directions per task s), with ``k_c + n·s = rank``."""
    common = int(rank * common_space_fraction)
    per_task = min(round((rank - common) / n), rank // n)
    return rank - n * per_task, per_task


@method(
    "iso_cts",
    params=IsoCtsParams,
    base="required",
    min_models=1,
    paper=_ISO,
    summary="Iso-C on the common subspace of the summed task vectors, completed with each "
    "task's own directions outside it (Iso-CTS).",
    embedding_fn=mean_task_vector,
    overhead=4.0,
)
def iso_cts(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: IsoCtsParams,
    model_params: Sequence[NoParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Iso-CTS: common and task-specific singular directions, a flat spectrum."""
    base = _check_base("iso_cts", inputs, base)
    if not _is_matrix(base):
        return mean_task_vector(inputs, base, params, model_params, generator)
    n = len(inputs)
    common, per_task = subspace_sizes(min(base.shape), n, params.common_space_fraction)
    u, s, vh = _summed_spectrum(inputs, base)
    if s.numel() == 0:
        return base.clone()  # no task moved this matrix
    # Deliberate: every subspace is cut to the numerical rank of what it comes from.
    if per_task == 0 or s.numel() <= common:  # the common subspace holds every direction
        return _flat(u, s, vh, params.alpha, base)  # Iso-C
    us, ss, vs = [u[:, :common]], [s[:common]], [vh[:common]]
    del u, s, vh
    u_common = us[0]  # [rows, k_c]
    for x in inputs:
        tv = x - base
        tv.addmm_(u_common, u_common.T @ tv, alpha=-1)  # τ_i⊥ = τ_i − U_c U_cᵀ τ_i, in place
        ui, si, vhi = svd(tv)
        keep = min(per_task, numerical_rank(si, tuple(tv.shape)))
        del tv
        us.insert(-1, ui[:, :keep])
        ss.insert(-1, si[:keep])
        vs.insert(-1, vhi[:keep])
        del ui, si, vhi
    u_cat, s_cat, v_cat = torch.cat(us, dim=1), torch.cat(ss), torch.cat(vs)
    del us, vs
    merged = polar(u_cat)
    del u_cat
    merged = merged @ polar(v_cat)
    return merged.mul_(s_cat.mean() * params.alpha).add_(base)
