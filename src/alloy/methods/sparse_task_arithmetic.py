"""Breadcrumbs and DELLA: the task-arithmetic pipeline with two more sparsifiers.

Both run ``merge_task_vectors`` (``task_arithmetic.py``): task vectors, sparsify, weight,
optionally elect signs, disjoint (or plain) sum, ``base + λ·Δ``. Only the sparsifier differs:

- Model Breadcrumbs (Davari & Belilovsky 2023, arXiv 2312.06795): per tensor, drop the
  ``int(gamma·n)`` largest ``|δ|`` (outliers) and the smallest, keeping ``int(density·n)``.
- DELLA's MagPrune (Deep et al. 2024, arXiv 2406.11617): keep each entry with probability
  ``density ± epsilon`` by its magnitude rank in its row, rescale the survivors by ``1/p``.

| method           | sparsify    | elect | normalize | rescale |
|------------------|-------------|-------|-----------|---------|
| breadcrumbs      | Breadcrumbs | no    | False     | False   |
| breadcrumbs_ties | Breadcrumbs | yes   | False     | False   |
| della            | MagPrune    | yes   | True      | True    |
| della_linear     | MagPrune    | no    | False     | True    |
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.methods.registry import method
from alloy.methods.task_arithmetic import (
    BreadcrumbsModelParams,
    DellaModelParams,
    TaskArithmeticParams,
)
from alloy.methods.task_vectors import factory, merge_task_vectors

_BREADCRUMBS = "Davari & Belilovsky 2023, Model Breadcrumbs (arXiv 2312.06795)"
_DELLA = "Deep, Bhardwaj & Poria 2024, DELLA-Merging (arXiv 2406.11617)"


class DellaParams(TaskArithmeticParams):
    normalize: bool = True
    rescale: bool = True


class DellaLinearParams(TaskArithmeticParams):
    rescale: bool = True


@method(
    "breadcrumbs",
    params=TaskArithmeticParams,
    model_params=BreadcrumbsModelParams,
    base="required",
    min_models=1,
    paper=_BREADCRUMBS,
    summary="Drop each task vector's largest (gamma) and smallest magnitudes, keep density, "
    "add the weighted sum to the base.",
    streamed=factory("breadcrumbs", False, "breadcrumbs"),
    reduces=True,
)
def breadcrumbs(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[BreadcrumbsModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Outlier and small-magnitude trimming, then task arithmetic."""
    return merge_task_vectors(
        inputs,
        base,
        params,
        model_params,
        generator,
        sparsify="breadcrumbs",
        elect=False,
        method="breadcrumbs",
    )


@method(
    "breadcrumbs_ties",
    params=TaskArithmeticParams,
    model_params=BreadcrumbsModelParams,
    base="required",
    min_models=1,
    paper=f"{_BREADCRUMBS}, with TIES sign election (arXiv 2306.01708)",
    summary="Breadcrumbs trimming, then TIES sign election and the sum of agreeing entries.",
    streamed=factory("breadcrumbs", True, "breadcrumbs_ties"),
    reduces=True,
)
def breadcrumbs_ties(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[BreadcrumbsModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Outlier and small-magnitude trimming, elect sign, sum of the agreeing entries."""
    return merge_task_vectors(
        inputs,
        base,
        params,
        model_params,
        generator,
        sparsify="breadcrumbs",
        elect=True,
        method="breadcrumbs_ties",
    )


@method(
    "della",
    params=DellaParams,
    model_params=DellaModelParams,
    base="required",
    min_models=1,
    paper=_DELLA,
    summary="Drop task-vector entries at random, larger magnitudes kept more often "
    "(density ± epsilon), rescale by 1/p, elect signs, average the agreeing entries.",
    randomized=True,
)
def della(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DellaParams,
    model_params: Sequence[DellaModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """MagPrune, elect sign, disjoint weighted mean of the agreeing entries."""
    return merge_task_vectors(
        inputs,
        base,
        params,
        model_params,
        generator,
        sparsify="della",
        elect=True,
        method="della",
    )


@method(
    "della_linear",
    params=DellaLinearParams,
    model_params=DellaModelParams,
    base="required",
    min_models=1,
    paper=_DELLA,
    summary="DELLA's magnitude-ranked random drop with 1/p rescale, then task arithmetic.",
    randomized=True,
)
def della_linear(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DellaLinearParams,
    model_params: Sequence[DellaModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """MagPrune each task vector, then the weighted sum added to the base."""
    return merge_task_vectors(
        inputs,
        base,
        params,
        model_params,
        generator,
        sparsify="della",
        elect=False,
        method="della_linear",
    )
