"""DELLA-Merging (Deep, Bhardwaj & Poria 2024, arXiv 2406.11617): task arithmetic after MagPrune.

MagPrune keeps each task-vector entry with probability ``density ± epsilon`` by its magnitude
rank in its row and rescales the survivors by ``1/p`` (`alloy.methods.sparsify.magprune`);
``della`` then elects signs and averages the agreeing entries, ``della_linear`` adds the
weighted sum. The ranks need whole rows, so DELLA is fed whole tensors.

| method           | sparsify    | elect | normalize | rescale |
|------------------|-------------|-------|-----------|---------|
| della            | MagPrune    | yes   | True      | True    |
| della_linear     | MagPrune    | no    | False     | True    |
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.methods.registry import method
from alloy.methods.sparsify import magprune
from alloy.methods.task_arithmetic import DellaModelParams, TaskArithmeticParams
from alloy.methods.task_vectors import combine, input_key, task_vectors, tensor_key

_DELLA = "Deep, Bhardwaj & Poria 2024, DELLA-Merging (arXiv 2406.11617)"


class DellaParams(TaskArithmeticParams):
    normalize: bool = True
    rescale: bool = True


class DellaLinearParams(TaskArithmeticParams):
    rescale: bool = True


def _della(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[DellaModelParams],
    generator: torch.Generator | None,
    *,
    elect: bool,
) -> torch.Tensor:
    method = "della" if elect else "della_linear"
    base, deltas = task_vectors(inputs, base, model_params, method)  # δ_i
    root = tensor_key(generator)
    for i, (d, p) in enumerate(zip(deltas, model_params)):
        if p.density < 1:  # δ̂_i, in place; the 1/p rescale is MagPrune's own
            magprune(d, p.density, p.epsilon, rescale=params.rescale, key=input_key(root, i), out=d)
    weights = [p.weight for p in model_params]
    return combine(base, deltas, [1.0] * len(model_params), weights, params, elect=elect)


@method(
    "della",
    params=DellaParams,
    model_params=DellaModelParams,
    base="required",
    paper=_DELLA,
    summary="Drop task-vector entries at random, larger magnitudes kept more often "
    "(density ± epsilon), rescale by 1/p, elect signs, average the agreeing entries.",
    randomized=True,
    overhead=3.5,
)
def della(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DellaParams,
    model_params: Sequence[DellaModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """MagPrune, elect, disjoint mean."""
    return _della(inputs, base, params, model_params, generator, elect=True)


@method(
    "della_linear",
    params=DellaLinearParams,
    model_params=DellaModelParams,
    base="required",
    paper=_DELLA,
    summary="DELLA's magnitude-ranked random drop with 1/p rescale, then task arithmetic.",
    randomized=True,
    overhead=3.0,
)
def della_linear(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DellaLinearParams,
    model_params: Sequence[DellaModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """MagPrune, weighted sum."""
    return _della(inputs, base, params, model_params, generator, elect=False)
