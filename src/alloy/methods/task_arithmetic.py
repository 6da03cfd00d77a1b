"""The task-arithmetic family: task_arithmetic, ties, dare_ties, dare_linear.

Each merges task vectors ``δ_i = x_i − base`` in the same steps (mergekit's "generalized task
arithmetic"), differing in how a task vector is sparsified and whether signs are elected::

    δ_i   = x_i − base                          task vector (Ilharco et al. 2022)
    δ̂_i   = sparsify(δ_i, density_i)            none | TIES trim | DARE drop | Breadcrumbs | DELLA
    W_i   = w_i · δ̂_i                           weighted before the election, as mergekit does
    γ     = sgn(Σ_i W_i)                        TIES elect (ties, dare_ties)
    a_i   = [sgn(W_i) = γ]                      agreement mask (1 for every entry without election)
    Δ     = Σ_i a_i·W_i / Σ_i a_i·w_i           disjoint mean; the division only when normalize
    merged = base + λ·Δ

| method          | sparsify        | elect | normalize | rescale |
|-----------------|-----------------|-------|-----------|---------|
| task_arithmetic | none            | no    | False     | False   |
| ties            | magnitude top-k | yes   | True      | False   |
| dare_ties       | DARE drop       | yes   | False     | True    |
| dare_linear     | DARE drop       | no    | False     | True    |

TIES is in ``ties.py``, DARE in ``dare.py``; Breadcrumbs and DELLA (``breadcrumbs.py``,
``della.py``) run the same steps with their own sparsifiers. The shared steps are in
``task_vectors.py``; the streamed accelerator in ``streamed/task_vectors.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from alloy.methods.bounds import Density, Fraction, NonNegative, Scale
from alloy.methods.registry import Params, method
from alloy.methods.streamed.task_vectors import family_accelerator
from alloy.methods.task_vectors import combine, task_vectors


class TaskArithmeticParams(Params):
    """Global parameters of the family; the subclasses only change the defaults."""

    # `lambda` is a Python keyword: the field is `lambda_`, the YAML key its alias `lambda`.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    int8_mask: bool = False  # accepted for mergekit configs; it only saves memory there
    normalize: bool = False  # divide by the (agreeing) weights' sum
    rescale: bool = False  # rescale what sparsification kept (DARE: 1/density)
    lambda_: Scale = Field(default=1.0, alias="lambda")  # scale of the merged task vector


class TiesParams(TaskArithmeticParams):
    normalize: bool = True


class DareTiesParams(TaskArithmeticParams):
    rescale: bool = True


class DareLinearParams(TaskArithmeticParams):
    rescale: bool = True


class TaskModelParams(Params):
    weight: Scale
    density: Density = 1.0  # fraction of the task vector kept (unused by task_arithmetic)


class BreadcrumbsModelParams(TaskModelParams):
    gamma: Fraction = 0.01  # share of the largest |δ| dropped as outliers


class DellaModelParams(TaskModelParams):
    epsilon: NonNegative = 0.15  # keep probabilities span density ± epsilon

    @field_validator("epsilon")
    @classmethod
    def _within_unit_interval(cls, epsilon: float, info: ValidationInfo) -> float:
        density = info.data.get("density")
        if density is None or not 0 < density < 1:
            return epsilon  # nothing is dropped at random: density 0 or >= 1
        if not (epsilon >= 0 and density - epsilon > 0 and density + epsilon < 1):
            raise ValueError(
                f"epsilon must be >= 0 with density ± epsilon inside (0, 1) (the keep "
                f"probabilities); density {density} allows epsilon < {min(density, 1 - density):g}"
            )
        return epsilon


@method(
    "task_arithmetic",
    params=TaskArithmeticParams,
    model_params=TaskModelParams,
    base="required",
    paper="Ilharco et al. 2022, Editing Models with Task Arithmetic (arXiv 2212.04089)",
    summary="base + λ·Σ w_i·(x_i − base): adds weighted task vectors to the base.",
    feeding="rows",
    accelerator=family_accelerator("none", elect=False, method="task_arithmetic"),
    overhead=2.0,
)
def task_arithmetic(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[TaskModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``base + λ·Σ w_i·δ_i`` (divided by ``Σ w_i`` when ``normalize``)."""
    base, deltas = task_vectors(inputs, base, model_params, "task_arithmetic")  # δ_i
    weights = [p.weight for p in model_params]
    return combine(base, deltas, [1.0] * len(model_params), weights, params, elect=False)
