"""Text descriptions of the registered methods, for `alloy methods`."""

from __future__ import annotations

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from alloy.methods.registry import MethodSpec, Params, all_methods

_BASE = {"none": "no base", "required": "needs a base", "optional": "base optional"}


def _fields(schema: type[Params]) -> list[str]:
    out = []
    for name, f in schema.model_fields.items():
        out.append(f"{f.alias or name}{_default(f)}")
    return out


def _default(f: FieldInfo) -> str:
    if f.default is PydanticUndefined:
        return " (required)"
    return f" = {f.default}"


def _models(spec: MethodSpec) -> str:
    lo, hi = spec.min_models, spec.max_models
    if hi == lo:
        return f"{lo} model{'s' if lo != 1 else ''}"
    return f"{lo}+ models" if hi is None else f"{lo}-{hi} models"


def list_methods() -> str:
    rows = []
    for spec in all_methods():
        rows.append(f"{spec.name:<16} {_BASE[spec.base]:<14} {_models(spec):<10} {spec.summary}")
    return "\n".join(rows) + "\n\n`alloy methods NAME` shows a method's parameters and paper."


def describe_method(spec: MethodSpec) -> str:
    lines = [
        f"{spec.name}: {spec.summary}",
        f"  paper: {spec.paper}",
        f"  base model: {_BASE[spec.base]}; inputs besides the base: {_models(spec)}",
        "  global parameters (one value per tensor): "
        + (", ".join(_fields(spec.params)) or "none"),
        "  per-model parameters: " + (", ".join(_fields(spec.model_params)) or "none"),
    ]
    if spec.randomized:
        lines.append("  random: seeded per (--random-seed, tensor name)")
    return "\n".join(lines)
