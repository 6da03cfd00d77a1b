"""Text descriptions of the methods, for `alloy methods`: from the stored catalog
(`alloy.methods.catalog`), so that neither torch nor the registry is imported."""

from __future__ import annotations

from alloy.methods.catalog import Field, MethodInfo, load_catalog

_BASE = {"none": "no base", "required": "needs a base", "optional": "base optional"}


def _fields(fields: tuple[Field, ...]) -> list[str]:
    return [f"{f.name}{' (required)' if f.default is None else f' = {f.default}'}" for f in fields]


def _models(info: MethodInfo) -> str:
    lo, hi = info.min_models, info.max_models
    if hi == lo:
        return f"{lo} model{'s' if lo != 1 else ''}"
    return f"{lo}+ models" if hi is None else f"{lo}-{hi} models"


def list_methods() -> str:
    rows = []
    for info in load_catalog().values():
        rows.append(f"{info.name:<16} {_BASE[info.base]:<14} {_models(info):<10} {info.summary}")
    return "\n".join(rows) + "\n\n`alloy methods NAME` shows a method's parameters and paper."


def describe_method(info: MethodInfo) -> str:
    lines = [
        f"{info.name}: {info.summary}",
        f"  paper: {info.paper}",
        f"  base model: {_BASE[info.base]}; inputs besides the base: {_models(info)}",
        "  global parameters (one value per tensor): "
        + (", ".join(_fields(info.params)) or "none"),
        "  per-model parameters: " + (", ".join(_fields(info.model_params)) or "none"),
    ]
    if info.randomized:
        lines.append("  random: seeded per (--random-seed, tensor name)")
    return "\n".join(lines)
