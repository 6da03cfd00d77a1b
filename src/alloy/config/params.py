"""Parameter resolution: precedence, filters and gradients, as mergekit resolves them.

Precedence, highest first: the source's own ``parameters`` (``models[i].parameters`` or
``slices[i].sources[j].parameters``), the slice's, then the top level, then the method default.
Global parameters (one value per tensor, e.g. slerp's ``t``) skip the per-model level.

A setting is evaluated at the layer position ``t`` (0 at a slice's first layer, 1 at its last;
embeddings and the final norm / head use 0):

- a scalar is itself;
- a list of numbers is a gradient: piecewise-linear over evenly spaced anchors;
- a list of non-numbers is a step function ``v[int(t * (len - 1))]``;
- a list of ``{filter, value}``: the first entry whose filter is absent, ``*`` or a substring
  of the tensor name wins, and its value is evaluated; if none matches, the next level is tried.

Filters of per-model parameters match the input model's tensor name; filters of global
parameters match the output tensor name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from alloy.config.schema import Conditional, ParamMap, ParamSetting, Scalar
from alloy.errors import ConfigIssue
from alloy.methods.registry import Params


def layer_position(index: int, count: int) -> float:
    """``t`` of layer ``index`` among ``count`` layers of one output slice."""
    return index / (count - 1) if count > 1 else 1.0


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _evaluate_list(values: tuple[Scalar, ...], t: float) -> Scalar:
    if all(_is_number(v) for v in values):
        nums = [float(v) for v in values]
        scaled = t * (len(nums) - 1)
        i0 = int(scaled)
        i1 = min(len(nums) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * nums[i0] + frac * nums[i1]
    return values[int(t * (len(values) - 1))]


def evaluate_setting(tensor_name: str, setting: ParamSetting, t: float) -> Scalar | None:
    """The value of one setting for one tensor at layer position ``t``, or None if no filter
    matched."""
    if not isinstance(setting, tuple):
        return setting
    if setting and isinstance(setting[0], Conditional):
        for cond in setting:
            assert isinstance(cond, Conditional)
            if cond.filter is None or cond.filter == "*" or cond.filter in tensor_name:
                v = cond.value
                return _evaluate_list(v, t) if isinstance(v, tuple) else v
        return None
    return _evaluate_list(setting, t)  # type: ignore[arg-type]


def resolve(
    name: str, levels: Iterable[ParamMap], tensor_name: str, t: float
) -> tuple[Scalar | None, int | None]:
    """The value of parameter ``name`` from the first level that sets it (and matches), with
    the index of that level; (None, None) when no level does."""
    for i, level in enumerate(levels):
        if name in level:
            value = evaluate_setting(tensor_name, level[name], t)
            if value is not None:
                return value, i
    return None, None


def resolve_params(
    schema: type[Params],
    levels: Sequence[ParamMap],
    tensor_name: str,
    t: float,
    where: str,
    issues: dict[tuple[str, str], ConfigIssue],
    defaults: Mapping[str, Any] | None = None,
) -> Params | None:
    """``schema`` validated from the values ``levels`` give ``tensor_name`` at layer position
    ``t`` (mergekit's precedence, filters and gradients); None with the errors added to
    ``issues`` (one per place and message)."""
    values: dict[str, Any] = {}
    for pname in schema.model_fields:
        alias = schema.model_fields[pname].alias or pname
        v, _ = resolve(alias, levels, tensor_name, t)
        if v is None and defaults and alias in defaults:
            v = defaults[alias]
        if v is not None:
            values[alias] = v
    try:
        return schema.model_validate(values)
    except ValidationError as e:
        for err in e.errors():
            field_name = ".".join(str(x) for x in err["loc"])
            if err["type"] == "missing":
                msg = f"missing required parameter {field_name!r} (first needed for {tensor_name})"
            else:
                msg = f"parameter {field_name!r}: {err['msg']} (for {tensor_name})"
            issues.setdefault((where, msg.split(" (")[0]), ConfigIssue(msg, where))
        return None
