"""Passthrough: copy one input tensor, optionally scaled.

Used for frankenmerges (each output slice comes from a single source) and for attenuating a
copied tensor::

    merged = scale · x   (scale defaults to 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.errors import MergeComputationError
from alloy.methods.bounds import Scale
from alloy.methods.registry import NoParams, Params, method


class PassthroughModelParams(Params):
    scale: Scale | None = None  # None: copy unchanged


@method(
    "passthrough",
    model_params=PassthroughModelParams,
    base="none",
    min_models=1,
    max_models=1,
    paper="none (copies a tensor; the basis of layer-stacking frankenmerges)",
    summary="Copies the single input tensor, multiplied by `scale` when given.",
    feeding="rows",
    overhead=0.0,
)
def passthrough(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: NoParams,
    model_params: Sequence[PassthroughModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``scale · x`` for the one input ``x``; without a scale the input itself is returned."""
    if len(inputs) != 1 or len(model_params) != 1:
        raise MergeComputationError(
            f"passthrough copies exactly one input per tensor, got {len(inputs)}; give each "
            "output slice a single source"
        )
    x, p = inputs[0], model_params[0]
    return x if p.scale is None else x * p.scale
