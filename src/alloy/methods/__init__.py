"""Merge methods: pure tensor functions registered with their parameter schemas.

The exports load the registry (and torch) on first use, so that `alloy.methods.catalog`, which
describes the methods for `alloy methods`, imports neither."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alloy.methods.registry import MethodSpec, Params, all_methods, get_method, method

__all__ = ["MethodSpec", "Params", "all_methods", "get_method", "method"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("alloy.methods.registry"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
