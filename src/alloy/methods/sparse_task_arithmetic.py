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

from alloy.methods.task_arithmetic import (
    BreadcrumbsModelParams,
    DellaModelParams,
    TaskArithmeticParams,
)
from alloy.methods.task_vectors import register_family

_BREADCRUMBS = "Davari & Belilovsky 2023, Model Breadcrumbs (arXiv 2312.06795)"
_DELLA = "Deep, Bhardwaj & Poria 2024, DELLA-Merging (arXiv 2406.11617)"


class DellaParams(TaskArithmeticParams):
    normalize: bool = True
    rescale: bool = True


class DellaLinearParams(TaskArithmeticParams):
    rescale: bool = True


register_family(
    "breadcrumbs",
    TaskArithmeticParams,
    BreadcrumbsModelParams,
    sparsify="breadcrumbs",
    elect=False,
    paper=_BREADCRUMBS,
    summary="Drop each task vector's largest (gamma) and smallest magnitudes, keep density, "
    "add the weighted sum to the base.",
)
register_family(
    "breadcrumbs_ties",
    TaskArithmeticParams,
    BreadcrumbsModelParams,
    sparsify="breadcrumbs",
    elect=True,
    paper=f"{_BREADCRUMBS}, with TIES sign election (arXiv 2306.01708)",
    summary="Breadcrumbs trimming, then TIES sign election and the sum of agreeing entries.",
)
register_family(
    "della",
    DellaParams,
    DellaModelParams,
    sparsify="della",
    elect=True,
    paper=_DELLA,
    summary="Drop task-vector entries at random, larger magnitudes kept more often "
    "(density ± epsilon), rescale by 1/p, elect signs, average the agreeing entries.",
)
register_family(
    "della_linear",
    DellaLinearParams,
    DellaModelParams,
    sparsify="della",
    elect=False,
    paper=_DELLA,
    summary="DELLA's magnitude-ranked random drop with 1/p rescale, then task arithmetic.",
)
