"""Calling a registered method the way the executor does, and calling mergekit for parity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from alloy.methods import get_method


def merge(
    name: str,
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    model_params: Sequence[Mapping[str, Any]] | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Validate the parameters with the method's schemas (YAML names) and run it."""
    spec = get_method(name)
    global_params = spec.params.model_validate(dict(params or {}))
    per_model = [
        spec.model_params.model_validate(dict(p))
        for p in (model_params if model_params is not None else [{}] * len(inputs))
    ]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return spec.fn(list(inputs), base, global_params, per_model, generator)


def t(*values: float) -> torch.Tensor:
    """A float32 tensor from literal values."""
    return torch.tensor(values, dtype=torch.float32)


def mergekit_merge(
    name: str,
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    model_params: Sequence[Mapping[str, Any]] | None = None,
) -> torch.Tensor:
    """The same merge through mergekit's in-memory API (base first, inputs after)."""
    from mergekit.merge_methods.api import merge_tensors

    tensors = ([base] if base is not None else []) + list(inputs)
    offset = 1 if base is not None else 0
    parameters: dict[str, Any] = dict(params or {})
    for i, mp in enumerate(model_params or []):
        for key, value in mp.items():
            parameters.setdefault(key, {})[i + offset] = value
    return merge_tensors(
        tensors, name, base_index=0 if base is not None else None, parameters=parameters
    )


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """max |a − e| ≤ rel · max |e| (relative error over the whole tensor)."""
    assert actual.shape == expected.shape
    err = float((actual.double() - expected.double()).abs().max())
    scale = float(expected.double().abs().max())
    assert err <= rel * max(scale, 1e-12), f"relative error {err / max(scale, 1e-12):.3g}"


def sparsified(
    name: str, delta: torch.Tensor, *, seed: int | None = None, rescale: bool = False, **mp: Any
) -> torch.Tensor:
    """What a task-vector method keeps of one task vector: the method run on a single input
    ``delta`` over a zero base with weight 1 and no normalization (``Δ = δ̂``)."""
    params = {"rescale": rescale, "normalize": False}
    return merge(
        name,
        [delta],
        torch.zeros_like(delta),
        params=params,
        model_params=[{"weight": 1.0, **mp}],
        seed=seed,
    )
