"""Readers of the values inside a config: keys, parameter settings, model references and
layer ranges. Each reports what is wrong to a `Reporter` (the YAML document, which knows the
line of every location) and returns None (or nothing) for a value it cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from alloy.config.document import Path_  # a location: ("models", 1, "parameters")
from alloy.config.modelref import MAPPING_KEYS, parse_model_ref
from alloy.config.schema import Conditional, ModelRef, ParamMap, ParamSetting
from alloy.errors import ModelRefSyntaxError, closest


class Reporter(Protocol):
    def error(self, path: Path_, message: str) -> None: ...

    def ignore(self, path: Path_, reason: str, near: str | None, value: Any = None) -> None: ...


def check_keys(
    doc: Reporter,
    value: Mapping[str, Any],
    allowed: tuple[str, ...],
    path: Path_,
    where: str,
    moved: Mapping[str, str] | None = None,
) -> None:
    """Keys outside ``allowed`` are ignored, as mergekit's schema ignores them (`Reporter.ignore`):
    ``where`` names the mapping ("a model entry"), ``moved`` gives the place of a key that
    belongs elsewhere (``{"weight": "models[0].parameters.weight"}``), else the closest valid
    key is suggested."""
    for key in value:
        if key not in allowed:
            near = (moved or {}).get(str(key))
            if near is None:
                near = closest(str(key), allowed)
            doc.ignore(
                (*path, str(key)),
                f"{str(key)!r} is not a key of {where} (valid here: {', '.join(allowed)})",
                near,
                value[key],
            )


def param_setting(doc: Reporter, value: Any, path: Path_) -> ParamSetting | None:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        # A single {filter, value} mapping: mergekit accepts it in the schema and then crashes;
        # Alloy reads it as a one-entry list.
        value = [value]
    if isinstance(value, list):
        if not value:
            doc.error(path, "an empty list is not a parameter value")
            return None
        if all(isinstance(v, dict) for v in value):
            conds: list[Conditional] = []
            for i, item in enumerate(value):
                ipath = (*path, i)
                check_keys(doc, item, ("filter", "value"), ipath, "a filtered parameter")
                if "value" not in item:
                    doc.error(ipath, "a filtered parameter needs a `value`")
                    continue
                inner = item["value"]
                if isinstance(inner, list):
                    if not inner or isinstance(inner[0], (dict, list)):
                        doc.error((*ipath, "value"), "must be a scalar or a list of numbers")
                        continue
                    inner = tuple(inner)
                elif not isinstance(inner, (bool, int, float, str)):
                    doc.error((*ipath, "value"), "must be a scalar or a list of numbers")
                    continue
                flt = item.get("filter")
                if flt is not None and not isinstance(flt, str):
                    flt = str(flt)
                conds.append(Conditional(value=inner, filter=flt))
            return tuple(conds)
        if any(isinstance(v, (dict, list)) for v in value):
            doc.error(
                path,
                "a list must hold either numbers (a gradient) or {filter, value} entries, "
                "not a mix",
            )
            return None
        return tuple(value)
    doc.error(path, f"unsupported parameter value of type {type(value).__name__}")
    return None


def read_params(
    doc: Reporter,
    value: Any,
    path: Path_,
    *,
    allowed: tuple[str, ...] | None,
    globals_: tuple[str, ...],
    method: str,
    per_model: bool,
) -> ParamMap:
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.error(path, "`parameters` must be a mapping of parameter names to values")
        return {}
    out: ParamMap = {}
    for key, v in value.items():
        kpath = (*path, str(key))
        setting = param_setting(doc, v, kpath)  # mergekit validates the value even if unused
        if allowed is not None and key not in allowed:
            near = closest(str(key), allowed)
            doc.ignore(
                kpath,
                f"{method} has no parameter {key!r} (its parameters: {', '.join(allowed) or 'none'})",
                near,
            )
            continue
        if per_model and key in globals_:
            doc.ignore(
                kpath,
                f"{key!r} is one value per tensor for {method}, read from the top-level or "
                "slice `parameters`, never per model",
                f"parameters.{key}",
            )
            continue
        if setting is not None:
            out[str(key)] = setting
    return out


def read_model(doc: Reporter, value: Any, path: Path_) -> ModelRef | None:
    if value is None or value == "":
        doc.error(path, "a model reference is required here")
        return None
    if isinstance(value, dict):
        known = (*MAPPING_KEYS, "override_architecture")  # the last is refused by the parser
        check_keys(doc, value, known, path, "a model mapping")
        value = {k: v for k, v in value.items() if k in known}
        for part in MAPPING_KEYS:  # {path, revision}: unknown keys dropped, as mergekit does
            if isinstance(value.get(part), dict):
                check_keys(doc, value[part], ("path", "revision"), (*path, part), f"`{part}`")
    try:
        return parse_model_ref(value)
    except ModelRefSyntaxError as e:
        doc.error(path, str(e))
        return None


def read_layer_range(doc: Reporter, value: Any, path: Path_) -> tuple[int, int] | None:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        doc.error(path, "layer_range must be two integers [start, end) (end excluded)")
        return None
    start, end = value
    if start < 0 or end <= start:
        doc.error(
            path,
            f"layer_range [{start}, {end}] is empty or negative: ranges are half-open "
            f"[start, end), so [{start}, {start + 1}] is the single layer {start}",
        )
        return None
    return (start, end)
