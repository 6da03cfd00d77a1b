"""Module kinds (embeddings, norms, attention, MLP, other) from tensor names, driven by
``kinds.json``: per-kind statistics for `alloy analyze`."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from alloy.arch.infer import is_embedding

OTHER = "other"


@cache
def _kinds() -> tuple[tuple[str, tuple[str, ...]], ...]:
    data = json.loads(resources.files("alloy.arch").joinpath("kinds.json").read_text())
    return tuple((k, tuple(data["patterns"][k])) for k in data["order"])


def kinds() -> list[str]:
    """Every kind, in report order."""
    return [k for k, _ in _kinds()] + [OTHER]


def module_kind(name: str) -> str:
    if is_embedding(name):
        return "embeddings"
    lowered = name.lower()
    for kind, patterns in _kinds():
        if any(p in lowered for p in patterns):
            return kind
    return OTHER
