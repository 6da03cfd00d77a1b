"""The real demo's merges: the core methods with the parameters a user would start from (the
LoRA adapters as inputs, ``base+adapter``), and the one adapter `alloy lora merge` writes."""

from __future__ import annotations

from typing import Any

from alloy.demo.advice import Advice
from alloy.demo.merges import merge_configs

METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_ties", "tsv")


def real_merge_configs(base: str, persona: str, tools: str) -> dict[str, dict[str, Any]]:
    """The tiny demo's configs (float32) of the methods in ``METHODS``."""
    configs = merge_configs(base, persona, tools)
    return {m: configs[m] for m in METHODS}


def lora_merge_source(advice: Advice) -> tuple[str, float | None]:
    """(method, density) of `alloy lora merge`: the recommended method and density when
    `lora merge` has it, else ``cat`` (the exact sum of the adapters: task arithmetic)."""
    from alloy.api_tools import LORA_METHODS

    config = advice.config or {}
    method = str(config.get("merge_method", ""))
    if method not in LORA_METHODS:
        return "cat", None
    densities = [(m.get("parameters") or {}).get("density") for m in config.get("models", [])] + [
        (config.get("parameters") or {}).get("density")
    ]
    density = next((float(d) for d in densities if isinstance(d, int | float)), None)
    return method, density
