"""Keys mergekit ignores: Alloy ignores them too, and says so; ``strict`` refuses them.

mergekit 0.1.5 reads its config with pydantic models that drop unknown keys (``extra`` left at
"ignore"), and a merge method reads only the parameters it declares. So a misspelled key
(``tokenzer_source``), a misplaced one (``weight:`` beside ``model:`` instead of under
``parameters:``, ``int8_mask:`` at the top level), a parameter the method does not take
(``weight`` under ``sce``), a global parameter set per model (slerp's ``t`` under
``models[i].parameters``), and the first of a key given twice (YAML keeps the last) change
nothing. The published models were made that way, so by default Alloy reads the config as
mergekit does and reports each such key once, with its line and the closest valid key
(`IgnoredKey`, carried by `MergeConfig.ignored` into the plan's notes and the report's
Warnings). With ``strict`` each is an error. What mergekit rejects (a malformed value, even of
an ignored parameter; a missing required key) stays an error.

When a required parameter is set nowhere and an ignored key would have set it (``tt:`` for
slerp's ``t``, ``paramters: {weight: 1}``), the error names both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import yaml

from alloy.config.document import Path_, fmt_path
from alloy.config.schema import IgnoredKey, InputSource, MergeConfig, ParamMap
from alloy.errors import ConfigError, ConfigIssue


class _Document(Protocol):
    """What is used of the YAML document (`alloy.config.document.Doc`)."""

    issues: list[ConfigIssue]

    def line(self, path: Path_) -> int | None: ...

    def error(self, path: Path_, message: str) -> None: ...


class Reader:
    """The document's problems (`error`) and the keys mergekit ignores (`ignore`): warnings,
    or errors when ``strict``."""

    def __init__(self, doc: _Document, strict: bool) -> None:
        self.doc = doc
        self.strict = strict
        self.ignored: list[IgnoredKey] = []

    def error(self, path: Path_, message: str) -> None:
        self.doc.error(path, message)

    def line(self, path: Path_) -> int | None:
        return self.doc.line(path)

    def ignore(self, path: Path_, reason: str, near: str | None, value: Any = None) -> None:
        """The key at ``path`` is one mergekit does not read: ``reason`` says why, ``near`` is
        the closest valid key (a location), ``value`` the value written there."""
        key = str(path[-1])
        holds = {key, *([near.rsplit(".", 1)[-1]] if near else [])}
        if isinstance(value, Mapping):
            holds |= {str(k) for k in value}
        ignored = IgnoredKey(
            fmt_path(path), self.doc.line(path), reason, near, tuple(sorted(holds))
        )
        if self.strict:
            hint = f"; did you mean {near!r}?" if near else ""
            self.doc.error(path, f"{reason}{hint} (mergekit ignores it; --strict refuses it)")
        self.ignored.append(ignored)

    def duplicates(self, text: str) -> None:
        """Keys given twice in one mapping: YAML keeps the last value. The document reports
        each as an error (at the later key); unless ``strict``, that becomes an ignored key
        (the earlier one, which mergekit's YAML loader drops too)."""
        for path, lines in duplicate_keys(text):
            located, last = fmt_path(path), lines[-1]
            if self.strict:
                continue
            self.doc.issues[:] = [
                i for i in self.doc.issues if not (i.path == located and i.line in lines[1:])
            ]
            self.ignored += [
                IgnoredKey(
                    located,
                    line,
                    f"{str(path[-1])!r} is given again at line {last} and YAML keeps the last "
                    "value, so this one is dropped",
                    hint=f"the value at line {last} is used; remove the others",
                )
                for line in lines[:-1]
            ]

    def explain_missing(
        self, method: str, name: str, where: str, scope: Sequence[str] | None
    ) -> bool:
        """If an ignored key inside ``scope`` (locations, "" for the top level; None for
        anywhere) would have set the required parameter ``name``, which is set nowhere for
        ``where``: an error naming both, and True."""
        culprits = [
            k
            for k in self.ignored
            if name in k.holds and (scope is None or any(_within(k.path, s) for s in scope))
        ]
        if not culprits:
            return False
        listed = "; ".join(
            f"`{k.path}`"
            + (f" (line {k.line})" if k.line is not None else "")
            + (f", did you mean {k.near!r}?" if k.near else "")
            for k in culprits
        )
        self.doc.issues.append(
            ConfigIssue(
                f"{method} needs the parameter {name!r}, which is set nowhere for {where}; "
                f"the key mergekit ignores here would have set it: {listed}",
                culprits[0].path,
                culprits[0].line,
            )
        )
        return True


def _within(path: str, scope: str) -> bool:
    """``path`` is a key of the mapping at ``scope`` or below it, not of a slice's sources."""
    if not scope:
        return "[" not in path.split(".", 1)[0]  # a top-level key or `parameters.x`
    rest = path[len(scope) :] if path.startswith(scope) else ""
    return rest.startswith((".", "[")) and not rest.startswith(".sources[")


def duplicate_keys(text: str) -> list[tuple[Path_, list[int]]]:
    """(location, the lines it is given on) of every key given more than once in one mapping
    of the YAML ``text`` (which the document has already read without error)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    found: list[tuple[Path_, list[int]]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Path_]] = [(node, ())] if node is not None else []
    while stack:
        n, path = stack.pop()
        if id(n) in seen:  # an alias: its node was walked already
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            lines: dict[str, list[int]] = {}
            for k, v in n.value:
                key = str(k.value) if isinstance(k, yaml.ScalarNode) else ""
                lines.setdefault(key, []).append(int(k.start_mark.line) + 1)
                stack.append((v, (*path, key)))
            found += [((*path, key), ls) for key, ls in lines.items() if len(ls) > 1]
        elif isinstance(n, yaml.SequenceNode):
            stack.extend((v, (*path, i)) for i, v in enumerate(n.value))
    return sorted(found, key=lambda f: f[1][0])


def _required(method: str, per_model: bool) -> list[str]:
    """The required parameters (no default) of ``method``: global or per model."""
    from alloy.methods.registry import get_method

    spec = get_method(method)
    schema = spec.model_params if per_model else spec.params
    return [f.alias or n for n, f in schema.model_fields.items() if f.is_required()]


def explain_missing(
    reader: Reader,
    method: str,
    top: ParamMap,
    slices: Sequence[tuple[str, ParamMap, Sequence[InputSource]]],
) -> None:
    """Errors for required parameters set at no level where an ignored key would have set
    them. ``slices``: (location, parameters, sources) of each slice (``models:`` is one slice
    located at "")."""
    if reader.strict or not reader.ignored:
        return  # with strict, every ignored key is an error already
    slice_levels = [top, *(p for _, p, _ in slices)]
    for name in _required(method, per_model=False):
        if not any(name in level for level in slice_levels):  # set per model, or misspelled
            reader.explain_missing(method, name, "any tensor", None)
    for name in _required(method, per_model=True):
        for loc, params, sources in slices:
            for src in sources:
                if not any(name in level for level in (src.parameters, params, top)):
                    scope = ["", *([loc] if loc else []), src.location]
                    reader.explain_missing(method, name, src.location, scope)


def refuse_ignored(config: MergeConfig) -> None:
    """``--strict`` on a config parsed without it: its ignored keys as one error."""
    if config.ignored:
        issues = [
            ConfigIssue(
                f"{k.reason}"
                + (f"; did you mean {k.near!r}?" if k.near else "")
                + " (mergekit ignores it; --strict refuses it)",
                k.path,
                k.line,
            )
            for k in config.ignored
        ]
        raise ConfigError(issues, config.source_file, config.lines)
