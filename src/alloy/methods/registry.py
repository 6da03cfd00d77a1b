"""The method registry: one entry per merge method, filled by the `@method` decorator.

A method is a pure tensor function (no I/O, no dtype or device policy, no config objects)::

    fn(inputs, base, params, model_params, generator) -> Tensor

- ``inputs``: the non-base input tensors, float32, all of one shape, on the compute device.
  For methods whose ``base`` policy is ``"none"`` a base model listed among the models is an
  ordinary input here.
- ``base``: the base tensor (float32), or ``None`` when the method takes no base or none was given.
- ``params``: an instance of the method's frozen global-parameter model (one value per tensor);
  the schemas bound every value (`alloy.methods.bounds`), so a bad one fails at plan time.
- ``model_params``: one instance of the method's frozen per-model parameter model per input.
- ``generator``: a ``torch.Generator`` seeded from (seed, output tensor name) for random
  methods, ``None`` for deterministic ones.

The function works on whole tensors and is the method's definition: the paper's steps, in
torch, on any device. The executor reads inputs in their stored dtype and converts them to
float32 on the compute device before calling it, then checks the result is finite and casts it
to the output dtype.

``feeding`` is the one thing the executor asks about how to feed a method (`alloy.plan.executor`
decides the units from it, and the memory estimate asks the executor):

- ``"whole"``: ``fn`` on each whole tensor;
- ``"rows"``: the output at an index depends only on the inputs at that index, so the tensor
  may come in row chunks, each merged on its own;
- ``"rows_after_passes"``: row chunks, after reduction passes over the whole tensor (TIES's
  top-k thresholds, SLERP's angle); only an ``accelerator`` can make those passes.

An ``accelerator`` (`alloy.methods.streamed`) computes the same merge over row chunks in bounded
memory, with the fused CPU kernels where they apply; the executor uses it instead of ``fn`` when
there is one, and the tests check that both give the same result.

A method may register a second function, ``embedding_fn`` with the same contract, for token
embeddings and output heads (``embed_tokens``, ``lm_head``, ...): ``fn_for`` picks it on those
tensors. The SVD methods use it to fall back to task arithmetic there, as their papers do; every
other method treats embeddings like any other tensor. Such a method is fed ``"whole"``.

``overhead`` is the number of float32 working copies of one unit per input the method holds at
its peak, beyond the inputs themselves (for the memory estimate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict

from alloy.errors import UnknownMethodError

if TYPE_CHECKING:
    from alloy.methods.streamed.stream import StreamFactory

BasePolicy = Literal["none", "required", "optional"]
Feeding = Literal["whole", "rows", "rows_after_passes"]


class Params(BaseModel):
    """Base class of every parameter schema: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NoParams(Params):
    """A method without parameters of this kind."""


class MergeFn(Protocol):
    def __call__(
        self,
        inputs: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: Any,
        model_params: Sequence[Any],
        generator: torch.Generator | None,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class MethodSpec:
    """Everything the planner, the CLI and the docs need to know about a method."""

    name: str
    fn: MergeFn
    params: type[Params]
    model_params: type[Params]
    base: BasePolicy
    min_models: int
    max_models: int | None
    paper: str
    summary: str
    overhead: float
    feeding: Feeding = "whole"
    randomized: bool = False
    # Called instead of `fn` on token embeddings and output heads (None: `fn` everywhere).
    embedding_fn: MergeFn | None = None
    # The same merge over row chunks (alloy.methods.streamed), used by the executor.
    accelerator: StreamFactory | None = None

    def fn_for(self, embedding: bool) -> MergeFn:
        """The function that merges a tensor (``embedding``: a token embedding or head)."""
        return self.embedding_fn if embedding and self.embedding_fn is not None else self.fn

    def param_names(self) -> list[str]:
        """Global parameter names as written in YAML (aliases, e.g. ``lambda``)."""
        return [f.alias or n for n, f in self.params.model_fields.items()]

    def model_param_names(self) -> list[str]:
        return [f.alias or n for n, f in self.model_params.model_fields.items()]


_REGISTRY: dict[str, MethodSpec] = {}


def method(
    name: str,
    *,
    params: type[Params] = NoParams,
    model_params: type[Params] = NoParams,
    base: BasePolicy,
    min_models: int = 1,
    max_models: int | None = None,
    paper: str,
    summary: str,
    overhead: float,
    feeding: Feeding = "whole",
    randomized: bool = False,
    embedding_fn: MergeFn | None = None,
    accelerator: StreamFactory | None = None,
) -> Callable[[MergeFn], MergeFn]:
    """Register a merge method. See the module docstring for the function's contract."""

    def register(fn: MergeFn) -> MergeFn:
        if name in _REGISTRY:
            raise ValueError(f"merge method {name!r} is registered twice")
        if feeding == "rows_after_passes" and accelerator is None:
            raise ValueError(f"{name}: only an accelerator makes reduction passes")
        if embedding_fn is not None and feeding != "whole":
            raise ValueError(f"{name}: a method with an embedding function is fed whole tensors")
        _REGISTRY[name] = MethodSpec(
            name=name,
            fn=fn,
            params=params,
            model_params=model_params,
            base=base,
            min_models=min_models,
            max_models=max_models,
            paper=paper,
            summary=summary,
            feeding=feeding,
            randomized=randomized,
            embedding_fn=embedding_fn,
            accelerator=accelerator,
            overhead=overhead,
        )
        return fn

    return register


def get_method(name: str) -> MethodSpec:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name, sorted(_REGISTRY)) from None


def all_methods() -> list[MethodSpec]:
    _load_builtin_methods()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _load_builtin_methods() -> None:
    # Importing the method modules runs their decorators.
    from alloy.methods import builtin  # noqa: F401
