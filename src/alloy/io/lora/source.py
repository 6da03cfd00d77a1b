"""A base model with a LoRA adapter applied on the fly, as a `TensorSource`.

Every tensor the adapter touches is computed when it is read, nothing is written to disk::

    W' = W + scale · B @ A            nn.Linear, W [out, in]
    W' = W + scale · (B @ A)ᵀ         GPT-2 Conv1D (W [in, out]) and nn.Embedding (W [vocab, dim])
    b' = b + scale · b_B              lora_bias=True
    W' = R                            replacements (modules_to_save, save_embedding_layers, bias)

A read of rows ``[r0, r1)`` computes only those rows: ``B[r0:r1] @ A``, or ``(B @ A[:, r0:r1])ᵀ``
for the transposed layouts, so the executor's row chunks stay bounded. Adapted tensors come
back in float32 (the sum is not rounded to the base's dtype); ``info`` reports the base's dtype,
the dtype a merge stores by default. Which layout a module has is read from the shapes: a
square weight follows the adapter's ``fan_in_fan_out``, an embedding is always transposed.

The architecture knowledge it needs (the model prefixes one side may lack, which names are an
output embedding) is passed in by the caller, from `alloy.arch.infer`: io sits below arch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from alloy.errors import IncompatibleModelsError
from alloy.io.lora.adapter import Adapter, LoraModule
from alloy.io.sources import TensorInfo, TensorSource

MAX_LISTED = 8


def lora_delta(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float,
    transposed: bool,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``scale · B @ A`` in float32, or its transpose; rows ``[r0, r1)`` of the result only."""
    a, b = a.float(), b.float()
    if transposed:
        if rows is not None:
            a = a[:, rows[0] : rows[1]]  # [r, rows]
        return (b @ a).T.mul_(scale)  # [rows, out]
    if rows is not None:
        b = b[rows[0] : rows[1]]  # [rows, r]
    return (b @ a).mul_(scale)  # [rows, in]


@dataclass(frozen=True)
class _Patch:
    module: LoraModule
    transposed: bool


class LoraSource:
    """``base`` with ``adapter`` applied, tensor by tensor. Reads headers only at construction.

    ``model_prefixes`` are the prefixes (``model.``, ``transformer.``) a tensor name may carry
    on one side only; ``is_output_embedding`` tells an output head, which an adapter may add to
    a base that ties it."""

    def __init__(
        self,
        base: TensorSource,
        adapter: Adapter,
        *,
        model_prefixes: Sequence[str],
        is_output_embedding: Callable[[str], bool],
    ) -> None:
        self.base = base
        self.adapter = adapter
        self._prefixes = tuple(model_prefixes)
        self._is_output_embedding = is_output_embedding
        names = base.names()
        self._base_names = set(names)
        self._names = list(names)
        self._patches: dict[str, _Patch] = {}
        self._bias: dict[str, LoraModule] = {}
        self._replace: dict[str, str] = {}
        problems: list[str] = []
        for m in adapter.modules.values():
            self._add_module(m, problems)
        for target, key in adapter.replacements.items():
            self._add_replacement(target, key, problems)
        if problems:
            shown = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED])
            more = (
                f"\n  ... and {len(problems) - MAX_LISTED} more"
                if len(problems) > MAX_LISTED
                else ""
            )
            raise IncompatibleModelsError(
                f"the adapter {adapter.path} does not fit this base model:\n{shown}{more}\n"
                "Check that the adapter was trained on this base (adapter_config.json "
                f"base_model_name_or_path: {adapter.base_model!r})."
            )

    def _find(self, name: str) -> str | None:
        """The base tensor called ``name``, allowing for a model prefix present on one side."""
        if name in self._base_names:
            return name
        for p in self._prefixes:
            if name.startswith(p) and name[len(p) :] in self._base_names:
                return name[len(p) :]
            if p + name in self._base_names:
                return p + name
        return None

    def _add_module(self, m: LoraModule, problems: list[str]) -> None:
        target = self._find(m.name + ".weight")
        if target is None:
            problems.append(f"module {m.name!r} (LoRA) has no tensor {m.name}.weight in the base")
            return
        shape = self.base.info(target).shape
        a, b = self.adapter.info(m.a_key).shape, self.adapter.info(m.b_key).shape
        normal, flipped = shape == (b[0], a[1]), shape == (a[1], b[0])
        if m.embedding and flipped:
            transposed = True
        elif normal and flipped:
            transposed = self.adapter.fan_in_fan_out
        elif normal != flipped and not m.embedding:
            transposed = flipped
        else:
            problems.append(
                f"{target}: base shape {list(shape)} does not fit the LoRA factors A {list(a)} "
                f"and B {list(b)} of module {m.name!r}"
            )
            return
        self._patches[target] = _Patch(m, transposed)
        if m.bias_key is not None:
            bias = self._find(m.name + ".bias")
            if bias is None:
                problems.append(f"module {m.name!r} has lora_B.bias but the base has no bias")
            elif self.base.info(bias).shape != (b[0],):
                problems.append(
                    f"{bias}: base shape {list(self.base.info(bias).shape)} does not fit "
                    f"lora_B.bias [{b[0]}]"
                )
            else:
                self._bias[bias] = m

    def _add_replacement(self, name: str, key: str, problems: list[str]) -> None:
        target = self._find(name)
        info = self.adapter.info(key)
        if target is None:
            if self._is_output_embedding(
                name
            ):  # a tied head trained as modules_to_save: now untied
                self._names.append(name)
                self._replace[name] = key
                return
            problems.append(f"{key}: the base has no tensor {name!r} for it to replace")
            return
        base_shape = self.base.info(target).shape
        if base_shape != info.shape:
            problems.append(
                f"{key}: shape {list(info.shape)} replaces {target} of shape {list(base_shape)} "
                "(a resized vocabulary? resize the base model's embeddings first)"
            )
            return
        self._replace[target] = key

    # -- TensorSource ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._names)

    def info(self, name: str) -> TensorInfo:
        if name in self._base_names:
            return self.base.info(name)
        if name in self._replace:
            return self.adapter.info(self._replace[name])
        raise KeyError(name)

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        if name in self._replace:
            t = self.adapter.get(self._replace[name], rows).float()
        elif name in self._base_names:
            t = self.base.get(name, rows)
        else:
            raise KeyError(name)
        patch = self._patches.get(name)
        if patch is not None:
            m = patch.module
            a, b = self.adapter.get(m.a_key), self.adapter.get(m.b_key)
            t = t.float() + lora_delta(a, b, m.scale, patch.transposed, rows)
        bias = self._bias.get(name)
        if bias is not None and bias.bias_key is not None:
            t = t.float() + bias.scale * self.adapter.get(bias.bias_key, rows).float()
        return t

    @property
    def adapted(self) -> list[str]:
        """Names of the tensors the adapter changes."""
        return sorted({*self._patches, *self._bias, *self._replace})

    def close(self) -> None:
        self.adapter.close()
        close = getattr(self.base, "close", None)
        if close is not None:
            close()
