"""The merges the demo runs: every core method with the parameters a user would start from,
plus the data-free methods (tsv, iso_c, iso_cts) where this Alloy has them.

All merges compute and store float32: the specialists' task vectors are small next to the
base weights, and a bfloat16 output would round part of them away.
"""

from __future__ import annotations

from typing import Any

from alloy.methods.registry import all_methods

DATA_FREE = ("tsv", "iso_c", "iso_cts")


def _models(persona: str, tools: str, **params: Any) -> list[dict[str, Any]]:
    return [
        {"model": m, "parameters": dict(params)} if params else {"model": m}
        for m in (persona, tools)
    ]


def merge_configs(base: str, persona: str, tools: str) -> dict[str, dict[str, Any]]:
    """Method name -> mergekit-style config merging the persona and tools specialists.

    ``base``, ``persona`` and ``tools`` are model references (directories, or
    ``base+adapter`` for LoRA adapters)."""
    configs: dict[str, dict[str, Any]] = {
        "linear": {"merge_method": "linear", "models": _models(persona, tools, weight=0.5)},
        "slerp": {
            "merge_method": "slerp",
            "base_model": persona,
            "models": _models(persona, tools),
            "parameters": {"t": 0.5},
        },
        "task_arithmetic": {
            "merge_method": "task_arithmetic",
            "base_model": base,
            "models": _models(persona, tools, weight=1.0),
        },
        "ties": {
            "merge_method": "ties",
            "base_model": base,
            "models": _models(persona, tools, weight=1.0, density=0.5),
        },
        "dare_ties": {
            "merge_method": "dare_ties",
            "base_model": base,
            "models": _models(persona, tools, weight=1.0, density=0.5),
        },
    }
    registered = {m.name for m in all_methods()}
    for name in DATA_FREE:
        if name in registered:
            configs[name] = {
                "merge_method": name,
                "base_model": base,
                "models": _models(persona, tools),
            }
    for cfg in configs.values():
        cfg["dtype"] = "float32"
    return configs


def apply_adapter_config(base: str, adapter: str) -> dict[str, Any]:
    """A one-model merge that writes ``base`` with ``adapter`` applied (W + scale * B @ A)."""
    return {
        "merge_method": "passthrough",
        "models": [{"model": f"{base}+{adapter}"}],
        "dtype": "float32",
    }
