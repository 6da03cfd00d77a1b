"""Architecture inference from tensor names and ``config.json``, driven by ``known.json``.

A tensor named ``<prefix>.<container>.<N>.<rest>`` (container one of ``layers``, ``h``,
``layer``, ``blocks``) belongs to layer ``N`` of the stack ``<prefix>.<container>``; every
other tensor sits before the stack (embeddings) or after it (final norm, head), told apart by
its name. A model whose checkpoint has no output embedding (``lm_head``) ties it to the input
embedding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Known:
    layer_containers: tuple[str, ...]
    layer_count_keys: tuple[str, ...]
    input_embeddings: tuple[str, ...]
    output_embeddings: tuple[str, ...]
    post_layer_prefixes: tuple[str, ...]
    model_prefixes: tuple[str, ...]


@cache
def known() -> Known:
    data = json.loads(resources.files("alloy.arch").joinpath("known.json").read_text())
    data.pop("_doc", None)
    return Known(**{k: tuple(v) for k, v in data.items()})


@cache
def _layer_re() -> re.Pattern[str]:
    containers = "|".join(re.escape(c) for c in known().layer_containers)
    return re.compile(rf"^(?P<stack>(?:.*?\.)?(?:{containers}))\.(?P<index>\d+)\.(?P<rest>.+)$")


def split_layer_name(name: str) -> tuple[str, int, str] | None:
    """``model.layers.3.mlp.up_proj.weight`` -> ``("model.layers", 3, "mlp.up_proj.weight")``."""
    m = _layer_re().match(name)
    if m is None:
        return None
    return m["stack"], int(m["index"]), m["rest"]


def _strip_model_prefix(name: str) -> str:
    for p in known().model_prefixes:
        if name.startswith(p):
            return name[len(p) :]
    return name


def is_post_layer(name: str) -> bool:
    """True for tensors that come after the layer stack (final norm, head, pooler)."""
    local = _strip_model_prefix(name)
    return any(local.startswith(p) for p in known().post_layer_prefixes)


def is_input_embedding(name: str) -> bool:
    return any(name == e or name.endswith("." + e) for e in known().input_embeddings)


def is_output_embedding(name: str) -> bool:
    return any(name == e or name.endswith("." + e) for e in known().output_embeddings)


def is_embedding(name: str) -> bool:
    return is_input_embedding(name) or is_output_embedding(name)


@dataclass
class Stack:
    """One stack of repeated layers: ``layers[i]`` lists the local names of layer ``i``."""

    name: str
    layers: dict[int, list[str]] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return max(self.layers) + 1 if self.layers else 0

    def full_name(self, index: int, rest: str) -> str:
        return f"{self.name}.{index}.{rest}"


@dataclass
class ArchInfo:
    """The structure of one checkpoint."""

    names: list[str]
    stacks: dict[str, Stack]
    pre: list[str]
    post: list[str]
    config: dict[str, Any]

    @cached_property
    def name_set(self) -> frozenset[str]:
        return frozenset(self.names)

    @property
    def main_stack(self) -> Stack | None:
        """The stack with the most tensors (the decoder of a causal LM)."""
        if not self.stacks:
            return None
        return max(self.stacks.values(), key=lambda s: sum(len(v) for v in s.layers.values()))

    def input_embedding(self) -> str | None:
        return next((n for n in self.names if is_input_embedding(n)), None)

    def tied(self) -> bool:
        """Output embedding tied to the input one: an input embedding is stored and no head
        (the tensors decide; the config's ``tie_word_embeddings`` is not read)."""
        if any(is_output_embedding(n) for n in self.names):
            return False
        return self.input_embedding() is not None


def infer(names: Iterable[str], config: dict[str, Any]) -> ArchInfo:
    names = list(names)
    stacks: dict[str, Stack] = {}
    pre: list[str] = []
    post: list[str] = []
    for n in names:
        split = split_layer_name(n)
        if split is not None:
            stack, idx, rest = split
            stacks.setdefault(stack, Stack(stack)).layers.setdefault(idx, []).append(rest)
        elif is_post_layer(n):
            post.append(n)
        else:
            pre.append(n)
    return ArchInfo(names, stacks, pre, post, config)


def find_layer_count_key(config: dict[str, Any], count: int) -> list[tuple[str, ...]]:
    """Dotted paths of the config keys that hold this stack's layer count."""
    found: list[tuple[str, ...]] = []

    def walk(d: dict[str, Any], path: tuple[str, ...]) -> None:
        for k, v in d.items():
            if k in known().layer_count_keys and v == count:
                found.append((*path, k))
            elif isinstance(v, dict):
                walk(v, (*path, k))

    walk(config, ())
    return found


# lists whose length can equal the layer count by coincidence
_NOT_PER_LAYER = {"architectures", "rope_scaling", "rope_parameters", "long_factor", "short_factor"}


def remap_config_layers(
    config: dict[str, Any], old_count: int, layer_sources: list[int]
) -> dict[str, Any]:
    """A copy of ``config`` for a model whose layer ``i`` comes from old layer
    ``layer_sources[i]``: layer counts updated, and every per-layer list (one entry per old
    layer, e.g. ``layer_types``) rebuilt in the new order."""
    new_count = len(layer_sources)

    def walk(d: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if k in known().layer_count_keys and v == old_count:
                out[k] = new_count
            elif k not in _NOT_PER_LAYER and isinstance(v, list) and len(v) == old_count > 1:
                out[k] = [v[i] for i in layer_sources]
            elif isinstance(v, dict) and k not in _NOT_PER_LAYER:
                out[k] = walk(v)
            else:
                out[k] = v
        return out

    return walk(config)
