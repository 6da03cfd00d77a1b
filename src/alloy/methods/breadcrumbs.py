"""Model Breadcrumbs (Davari & Belilovsky 2023, arXiv 2312.06795): task arithmetic after an
outlier trim.

Per tensor, drop the ``int(gamma·n)`` largest ``|δ|`` (outliers) and the smallest, keeping
``int(density·n)`` (`alloy.methods.sparsify.outlier_counts`); then ``breadcrumbs`` adds the
weighted sum to the base and ``breadcrumbs_ties`` elects signs first, as TIES does.

| method           | sparsify    | elect | normalize | rescale |
|------------------|-------------|-------|-----------|---------|
| breadcrumbs      | Breadcrumbs | no    | False     | False   |
| breadcrumbs_ties | Breadcrumbs | yes   | False     | False   |
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.methods.registry import method
from alloy.methods.sparsify import outlier_counts, top_magnitude_mask
from alloy.methods.streamed.task_vectors import family_accelerator
from alloy.methods.task_arithmetic import BreadcrumbsModelParams, TaskArithmeticParams
from alloy.methods.task_vectors import combine, l1_rescale, task_vectors

_BREADCRUMBS = "Davari & Belilovsky 2023, Model Breadcrumbs (arXiv 2312.06795)"


def outlier_trim(delta: torch.Tensor, density: float, gamma: float, rescale: bool) -> float:
    """Breadcrumbs' trim, in place: ``δ`` keeps a window of magnitude ranks, below the top
    ``int(gamma·n)``. Returns the rescale factor (the L1 norm matched when ``rescale``)."""
    if density >= 1:
        return 1.0  # keeps everything
    # Deliberate: a gamma rounding to no entry drops no outlier (mergekit 0.1.4 and older
    # zeroed the whole task vector there: idx[n_bot:-0] is empty).
    top, kept = outlier_counts(delta.numel(), density, gamma)
    keep = top_magnitude_mask(delta, top + kept)
    if top > 0:
        keep &= ~top_magnitude_mask(delta, top)
    scale = l1_rescale(delta, keep) if rescale else 1.0
    delta.mul_(keep)
    return scale


def _breadcrumbs(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[BreadcrumbsModelParams],
    *,
    elect: bool,
    method: str,
) -> torch.Tensor:
    base, deltas = task_vectors(inputs, base, model_params, method)  # δ_i
    scales = [
        outlier_trim(d, p.density, p.gamma, params.rescale)  # δ̂_i
        for d, p in zip(deltas, model_params)
    ]
    weights = [p.weight for p in model_params]
    return combine(base, deltas, scales, weights, params, elect=elect)


@method(
    "breadcrumbs",
    params=TaskArithmeticParams,
    model_params=BreadcrumbsModelParams,
    base="required",
    paper=_BREADCRUMBS,
    summary="Drop each task vector's largest (gamma) and smallest magnitudes, keep density, "
    "add the weighted sum to the base.",
    feeding="rows_after_passes",
    accelerator=family_accelerator("breadcrumbs", elect=False, method="breadcrumbs"),
    overhead=3.0,
)
def breadcrumbs(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[BreadcrumbsModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Outlier trim, weighted sum."""
    return _breadcrumbs(inputs, base, params, model_params, elect=False, method="breadcrumbs")


@method(
    "breadcrumbs_ties",
    params=TaskArithmeticParams,
    model_params=BreadcrumbsModelParams,
    base="required",
    paper=f"{_BREADCRUMBS}, with TIES sign election (arXiv 2306.01708)",
    summary="Breadcrumbs trimming, then TIES sign election and the sum of agreeing entries.",
    feeding="rows_after_passes",
    accelerator=family_accelerator("breadcrumbs", elect=True, method="breadcrumbs_ties"),
    overhead=3.5,
)
def breadcrumbs_ties(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[BreadcrumbsModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Outlier trim, elect, disjoint sum."""
    return _breadcrumbs(inputs, base, params, model_params, elect=True, method="breadcrumbs_ties")
