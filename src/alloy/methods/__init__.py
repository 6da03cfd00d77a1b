"""Merge methods: pure tensor functions registered with their parameter schemas."""

from alloy.methods.registry import MethodSpec, Params, all_methods, get_method, method

__all__ = ["MethodSpec", "Params", "all_methods", "get_method", "method"]
