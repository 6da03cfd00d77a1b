"""The search space: a mergekit YAML in which any value may be a range or a list of choices.

- ``{search: [LOW, HIGH]}``: a float drawn from [LOW, HIGH]; ``log: true`` draws on a log
  scale (LOW > 0), ``step: S`` on a grid LOW, LOW + S, ...; two integer bounds and
  ``int: true`` draw an integer;
- ``{choice: [A, B, ...]}``: one of the listed values (numbers, strings, lists, mappings);
- ``merge_method: {choice: [ties, dare_ties, ...]}``: the method itself; a parameter the
  drawn method does not take (``density`` for ``task_arithmetic``) is left out of that trial.

Every other value is fixed. Each searched value is named by its location in the document
(``models[0].parameters.weight``, ``parameters.t``, ``merge_method``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alloy.config.load import parse_config
from alloy.errors import ConfigError, ConfigIssue, UnknownMethodError
from alloy.methods.registry import get_method

Loc = tuple[str | int, ...]
METHOD = "merge_method"
_RANGE_KEYS = {"search", "log", "step", "int"}


@dataclass(frozen=True)
class Param:
    """One searched value: a range (``low``, ``high``) or ``choices``."""

    name: str  # its location, e.g. "models[0].parameters.weight"
    loc: Loc
    line: int | None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        scale = " (log)" if self.log else f" (step {self.step})" if self.step else ""
        kind = "integer" if self.integer else "float"
        return f"{kind} in [{self.low}, {self.high}]{scale}"


def loc_name(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub: Loc = (*loc, str(key.value))
            _lines(value, sub, out)
            out[sub] = key.start_mark.line + 1  # a key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*loc, i), out)


@dataclass(frozen=True)
class SearchSpace:
    """The document with its searched values replaced by `Param` markers, and the params."""

    document: dict[str, Any]
    params: tuple[Param, ...]
    source: str | None
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # location -> line

    @property
    def methods(self) -> tuple[str, ...]:
        p = self.param(METHOD)
        if p is not None and p.choices is not None:
            return tuple(str(c) for c in p.choices)
        return (str(self.document[METHOD]),)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def fingerprint(self) -> str:
        """A digest of the space (fixed values and ranges): a resumed study must match it."""
        text = json.dumps(
            [self.document, [p.__dict__ for p in self.params]], sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def applies(self, param: Param, method: str) -> bool:
        """Whether ``param`` is used by a trial of ``method`` (a parameter it takes)."""
        return _accepts(self.document, param.loc, method)

    def instantiate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The mergekit config of one trial: every marker replaced by its value in
        ``values``; parameters the trial's method does not take are left out."""
        doc = copy.deepcopy(self.document)
        method = str(values.get(METHOD, doc.get(METHOD)))
        missing = [p.name for p in self.params if p.name not in values and self.applies(p, method)]
        if missing:
            raise ConfigError(
                [ConfigIssue(f"no value for the searched {n}", n) for n in missing], self.source
            )
        filled: dict[str, Any] = _fill(doc, (), values, method, self.params)
        return filled


def _accepts(doc: Mapping[str, Any], loc: Loc, method: str) -> bool:
    if "parameters" not in loc[:-1]:
        return True
    at = len(loc) - 1 - loc[::-1].index("parameters")
    spec = get_method(method)
    return str(loc[at + 1]) in (*spec.param_names(), *spec.model_param_names())


def _fill(
    node: Any, loc: Loc, values: Mapping[str, Any], method: str, params: tuple[Param, ...]
) -> Any:
    if isinstance(node, Param):
        return values[node.name]
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            sub = (*loc, k)
            if loc and loc[-1] == "parameters" and not _accepts({}, sub, method):
                continue
            out[k] = _fill(v, sub, values, method, params)
        return out
    if isinstance(node, list):
        return [_fill(v, (*loc, i), values, method, params) for i, v in enumerate(node)]
    return node


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _range(spec: Mapping[str, Any], loc: Loc, line: int | None) -> Param | str:
    """The `Param` of a ``{search: [low, high], ...}`` mapping, or what is wrong with it."""
    unknown = sorted(set(spec) - _RANGE_KEYS)
    if unknown:
        return f"unknown key {unknown[0]!r} in a range; use search, log, step, int"
    bounds = spec["search"]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(_number, bounds))):
        return "`search` takes two numbers [LOW, HIGH], e.g. {search: [0.1, 1.0]}"
    low, high = float(bounds[0]), float(bounds[1])
    if not low < high:
        return f"the range [{bounds[0]}, {bounds[1]}] is empty: LOW must be below HIGH"
    log, step, integer = spec.get("log", False), spec.get("step"), spec.get("int", False)
    if not isinstance(log, bool) or not isinstance(integer, bool):
        return "`log` and `int` are true or false"
    if log and low <= 0:
        return "a log range needs LOW > 0"
    if step is not None and (not _number(step) or step <= 0 or log):
        return "`step` is a positive number (and not with log: true)"
    if integer and not all(isinstance(b, int) for b in bounds):
        return "an `int: true` range needs integer bounds"
    name = loc_name(loc)
    return Param(name, loc, line, low, high, log, float(step) if step else None, integer)


def _marker(node: Any, loc: Loc, line: int | None) -> Param | str | None:
    """A `Param` when ``node`` is a search marker, an error message when it is a malformed
    one, None for a plain value."""
    if not isinstance(node, dict):
        return None
    if "search" in node and "choice" in node:
        return "a value is either {search: [LOW, HIGH]} or {choice: [...]}, not both"
    if "search" in node:
        return _range(node, loc, line)
    if "choice" in node:
        choices = node["choice"]
        if len(node) != 1:
            return "a choice takes only the key `choice`"
        if not isinstance(choices, list) or not choices:
            return "`choice` takes a non-empty list, e.g. {choice: [ties, dare_ties]}"
        if loc == (METHOD,) and not all(isinstance(c, str) for c in choices):
            return "the methods to choose from are names, e.g. {choice: [ties, slerp]}"
        return Param(loc_name(loc), loc, line, choices=tuple(choices))
    return None


def _walk(
    node: Any, loc: Loc, lines: dict[Loc, int], params: list[Param], issues: list[ConfigIssue]
) -> Any:
    found = _marker(node, loc, lines.get(loc))
    if isinstance(found, Param):
        params.append(found)
        return found
    if isinstance(found, str):
        issues.append(ConfigIssue(found, loc_name(loc), lines.get(loc)))
        return node
    if isinstance(node, dict):
        return {k: _walk(v, (*loc, str(k)), lines, params, issues) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, (*loc, i), lines, params, issues) for i, v in enumerate(node)]
    return node


def parse_space(text: str, source: str | None = None) -> SearchSpace:
    """The search space of a YAML text; every problem raised at once with its key and line
    (a `ConfigError`), including those of the configs it spans (each method is checked)."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue(f"not valid YAML: {e}", "", line)], source) from e
    if not isinstance(data, dict) or node is None:
        raise ConfigError([ConfigIssue("the config must be a YAML mapping", "", 1)], source)
    lines: dict[Loc, int] = {}
    _lines(node, (), lines)
    params: list[Param] = []
    issues: list[ConfigIssue] = []
    document = _walk(data, (), lines, params, issues)
    if issues:
        raise ConfigError(issues, source)
    space = SearchSpace(document, tuple(params), source, {loc_name(k): v for k, v in lines.items()})
    _check_methods(space, space.lines)
    return space


def load_space(path: str | Path) -> SearchSpace:
    p = Path(path)
    if not p.is_file():
        raise ConfigError([ConfigIssue(f"config file {p} does not exist", "")], None)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([ConfigIssue(f"cannot read {p}: {e}", "")], str(p)) from e
    return parse_space(text, str(p))


def example_values(space: SearchSpace, method: str) -> dict[str, Any]:
    """One value per param (each range's low end, each choice's first) for ``method``."""
    values: dict[str, Any] = {}
    for p in space.params:
        if p.name == METHOD:
            values[p.name] = method
        elif p.choices is not None:
            values[p.name] = p.choices[0]
        else:
            values[p.name] = int(p.low) if p.integer else p.low  # type: ignore[arg-type]
    return values


def _param_keys(node: Any, loc: Loc) -> list[Loc]:
    """The location of every key directly under a ``parameters`` mapping."""
    found: list[Loc] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if loc and loc[-1] == "parameters":
                found.append((*loc, k))
            else:
                found += _param_keys(v, (*loc, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _param_keys(v, (*loc, i))
    return found


def _unused_keys(space: SearchSpace, lines: Mapping[str, int]) -> list[ConfigIssue]:
    """A parameter that no method of a method choice takes (a typo, say) would silently be
    left out of every trial: each one is an issue."""
    if space.param(METHOD) is None:
        return []  # one method: parse_config names unknown parameters itself
    issues = []
    for loc in _param_keys(space.document, ()):
        if not any(_accepts(space.document, loc, m) for m in space.methods):
            name = loc_name(loc)
            issues.append(
                ConfigIssue(
                    f"no method of {', '.join(space.methods)} takes `{loc[-1]}`",
                    name,
                    lines.get(name),
                )
            )
    return issues


def _check_methods(space: SearchSpace, lines: Mapping[str, int]) -> None:
    """Every method of the space must take a config of this shape: parse one per method."""
    issues = []
    for method in space.methods:
        try:
            get_method(method)
        except UnknownMethodError as e:
            issues.append(ConfigIssue(str(e), METHOD, lines.get(METHOD)))
    if issues:
        raise ConfigError(issues, space.source)
    issues = _unused_keys(space, lines)
    for method in space.methods:
        try:
            parse_config(space.instantiate(example_values(space, method)), source=space.source)
        except ConfigError as e:
            for i in e.issues:
                line = lines.get(i.path)
                issues.append(ConfigIssue(f"with merge_method {method}: {i.message}", i.path, line))
        except UnknownMethodError as e:
            line = lines.get(METHOD)
            issues.append(ConfigIssue(str(e), METHOD, line))
    if issues:
        raise ConfigError(issues, space.source)


Suggest = Callable[[Param], Any]


def draw(space: SearchSpace, suggest: Suggest) -> dict[str, Any]:
    """One trial's values: the method first, then each param the method uses."""
    values: dict[str, Any] = {}
    method_param = space.param(METHOD)
    method = str(suggest(method_param)) if method_param else space.methods[0]
    if method_param is not None:
        values[METHOD] = method
    for p in space.params:
        if p.name != METHOD and space.applies(p, method):
            values[p.name] = suggest(p)
    return values
