"""A YAML config document as Python values, with the line of every key and item.

Loading is bounded, so that no file can hang Alloy or exhaust its memory: the text must be
UTF-8 and at most `MAX_BYTES`; nesting is at most `MAX_DEPTH` deep; alias expansion (a "billion
laughs" bomb) stops at `MAX_NODES` values; a recursive alias, a key that is not a scalar and any
tag beyond YAML's plain types (``!!python/...`` included) are errors. Every problem is a
`ConfigError` with its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alloy.errors import ConfigError, ConfigIssue

Path_ = tuple[str | int, ...]
MAX_BYTES = 10_000_000
MAX_DEPTH = 64
MAX_NODES = 100_000
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def fmt_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _fail(message: str, line: int | None, source: str | None) -> ConfigError:
    return ConfigError([ConfigIssue(message, "", line)], source)


def read_config_text(path: Path) -> str:
    """The text of a config file: a regular UTF-8 file of at most `MAX_BYTES`."""
    source = str(path)
    if not path.is_file():  # also false for a FIFO or device, which would block
        raise ConfigError([ConfigIssue(f"config file {path} does not exist", "")], None)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise _fail(f"cannot read the config: {e.strerror or e}", None, source) from e
    if len(data) > MAX_BYTES:
        raise _fail(f"the config is larger than {MAX_BYTES} bytes; is it a config?", None, source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise _fail(
            f"not UTF-8 text ({e.reason} at byte {e.start}); a config is a YAML text file",
            line,
            source,
        ) from e


def _check_events(text: str, source: str | None) -> None:
    """Bound the nesting depth from the event stream (iterative, before anything recursive)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _fail(
                    f"nested more than {MAX_DEPTH} levels deep; a merge config is a few levels",
                    event.start_mark.line + 1 if event.start_mark else None,
                    source,
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _compose(text: str, source: str | None) -> yaml.Node | None:
    try:
        _check_events(text, source)
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        position = getattr(e, "position", None)  # a ReaderError (a forbidden character)
        if line is None and isinstance(position, int):
            line = text[:position].count("\n") + 1
        raise _fail(f"not valid YAML: {getattr(e, 'problem', None) or e}", line, source) from None
    except RecursionError:
        raise _fail("nested too deeply to read", None, source) from None


class Doc:
    """A YAML document as Python values, with the line of every key and item."""

    def __init__(self, text: str, source: str | None) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.issues: list[ConfigIssue] = []
        node = _compose(text, source)
        self._loader = yaml.SafeLoader("")
        self._built = 0
        self._stack: set[int] = set()
        self.data = self._build(node, ()) if node is not None else None

    def _line(self, node: yaml.Node) -> int:
        return int(node.start_mark.line) + 1

    def _count(self, node: yaml.Node) -> None:
        self._built += 1
        if self._built > MAX_NODES:
            raise _fail(
                f"the config expands to more than {MAX_NODES} values (aliases of aliases?); "
                "write the values out or use fewer aliases",
                self._line(node),
                self.source,
            )

    def _build(self, node: yaml.Node, path: Path_) -> Any:
        self._count(node)
        self.lines.setdefault(path, self._line(node))
        if id(node) in self._stack:
            raise _fail(
                "an alias refers to the value that contains it", self._line(node), self.source
            )
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if len(self._stack) >= MAX_DEPTH:
            raise _fail(f"nested more than {MAX_DEPTH} levels deep", self._line(node), self.source)
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._check_tag(node, _MAP)
                return self._mapping(node, path)
            self._check_tag(node, _SEQ)
            return [self._build(v, (*path, i)) for i, v in enumerate(node.value)]
        finally:
            self._stack.discard(id(node))

    def _check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            raise _fail(
                f"the tag {node.tag!r} is not allowed; a config holds plain mappings, lists "
                "and scalars",
                self._line(node),
                self.source,
            )

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as e:
            why = getattr(e, "problem", None) or e
            raise _fail(
                f"unreadable value {node.value!r:.60}: {why}", self._line(node), self.source
            ) from None

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise _fail(
                    "a key must be a plain value (a name), not a list or mapping",
                    self._line(knode),
                    self.source,
                )
            self._count(knode)
            key = self._scalar(knode)
            kpath = (*path, str(key))
            if key in out:
                self.issues.append(
                    ConfigIssue(
                        f"key {key!r} appears twice (YAML keeps only the last; remove one)",
                        fmt_path(kpath),
                        self._line(knode),
                    )
                )
            self.lines[kpath] = self._line(knode)
            out[key] = self._build(vnode, kpath)
        return out

    def line(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, path: Path_, message: str) -> None:
        self.issues.append(ConfigIssue(message, fmt_path(path), self.line(path)))


def random_seed_of(raw: Any, source: str | None) -> int | None:
    """The config's ``random_seed`` key (written into alloy_config.yml by a randomized merge,
    so that merging that file again gives the same bytes), validated; None when absent."""
    if not isinstance(raw, dict) or raw.get("random_seed") is None:
        return None
    seed = raw["random_seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ConfigError(
            [ConfigIssue(f"must be a non-negative integer, not {seed!r}", "random_seed")], source
        )
    return seed
