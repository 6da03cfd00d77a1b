"""Evaluation data and probe files: parsed and validated before any model is loaded.

Data sets (perplexity), one named set per file (``persona=held_out.jsonl``; without ``NAME=``
the file's stem names the set):

- a ``.jsonl`` file: one JSON object per line, either ``{"text": "..."}`` or
  ``{"messages": [{"role": "user", "content": "..."}, ...]}`` (rendered with the model's chat
  template); other keys are ignored, blank lines skipped;
- any other file: plain UTF-8 text, evaluated as one document (with sliding windows when it is
  longer than the model's context).

Probe files are JSONL; each line holds a ``prompt`` (used verbatim) or ``messages`` (rendered
with the chat template and its generation prompt), plus per kind:

- ``tool-calls``: ``"expected": {"name": "get_weather", "arguments": {"city": "Paris"}}``;
- ``contains``: ``"must_contain": [...]`` and/or ``"must_not_contain": [...]``, optionally
  ``"case_sensitive": true`` (matching ignores case by default).

Unknown keys in a probe line are errors (a misspelt ``must_contian`` would silently test nothing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alloy.errors import EvalDataError

Messages = list[dict[str, str]]
ProbeKind = Literal["tool-calls", "contains"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("tool-calls", "contains")
_NAME = re.compile(r"^[\w.-]+$")


@dataclass(frozen=True)
class Document:
    """One text of a data set: plain ``text`` or a chat ``messages`` list."""

    text: str | None = None
    messages: Messages | None = None


@dataclass(frozen=True)
class DataSet:
    name: str
    path: Path
    documents: list[Document]

    @property
    def has_chat(self) -> bool:
        return any(d.messages is not None for d in self.documents)


@dataclass(frozen=True)
class Probe:
    """One prompt of a probe file and what its answer must satisfy."""

    prompt: str | None
    messages: Messages | None
    expected: dict[str, Any] | None = None  # tool-calls: {"name": ..., "arguments": {...}}
    must_contain: tuple[str, ...] = ()
    must_not_contain: tuple[str, ...] = ()
    case_sensitive: bool = False
    id: str | None = None


@dataclass(frozen=True)
class ProbeSet:
    name: str
    kind: ProbeKind
    path: Path
    probes: list[Probe] = field(default_factory=list)

    @property
    def has_chat(self) -> bool:
        return any(p.messages is not None for p in self.probes)


def parse_named(spec: str | tuple[str, str | Path] | Path) -> tuple[str, Path]:
    """``name=path`` -> (name, path); a bare path is named by its stem."""
    if isinstance(spec, tuple):
        return spec[0], Path(spec[1])
    text = str(spec)
    name, sep, rest = text.partition("=")
    if sep and name and _NAME.match(name):
        return name, Path(rest)
    path = Path(text)
    return path.stem, path


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise EvalDataError(f"{path}: no such file; give an existing text or JSONL file.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EvalDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}).") from e


def _lines(raw: str) -> list[str]:
    """JSONL lines: split on newlines only (U+2028 and friends are valid inside a JSON string)."""
    return [line.removesuffix("\r") for line in raw.split("\n")]


def _bad_string(obj: Any) -> str | None:
    """The dotted key of the first string that is not valid Unicode (a lone surrogate)."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return where or "the value"
        elif isinstance(v, dict):
            stack += [(f"{where}.{k}" if where else str(k), x) for k, x in v.items()]
            if any(isinstance(k, str) and _bad_string(k) for k in v):
                return where or "a key"
        elif isinstance(v, list):
            stack += [(f"{where}[{i}]", x) for i, x in enumerate(v)]
    return None


def _read_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    raw = _read_text(path)
    out = []
    for n, line in enumerate(_lines(raw), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalDataError(f"{path}:{n}: not valid JSON ({e.msg}, column {e.colno}).") from e
        except RecursionError:
            raise EvalDataError(
                f"{path}:{n}: the JSON is nested too deeply; a record is an object of strings."
            ) from None
        if not isinstance(obj, dict):
            raise EvalDataError(f"{path}:{n}: each line must be a JSON object, not {obj!r:.40}.")
        bad = _bad_string(obj)
        if bad is not None:
            raise EvalDataError(
                f"{path}:{n}: `{bad}` holds a lone surrogate escape (such as \\ud800), which is "
                "not text; fix the line."
            )
        out.append((n, obj))
    if not out:
        raise EvalDataError(f"{path}: the file holds no records; add one JSON object per line.")
    return out


def _messages(value: Any, where: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise EvalDataError(f"{where}: `messages` must be a non-empty list of {{role, content}}.")
    out = []
    for i, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise EvalDataError(
                f"{where}: messages[{i}] must be an object with string `role` and `content`."
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out


def load_data_set(name: str, path: str | Path) -> DataSet:
    """Read and validate a data set file (see the module docstring for the formats)."""
    path = Path(path)
    if path.suffix != ".jsonl":
        text = _read_text(path)
        if not text.strip():
            raise EvalDataError(f"{path}: the file is empty; perplexity needs some text.")
        return DataSet(name, path, [Document(text=text)])
    docs = []
    for n, obj in _read_lines(path):
        where = f"{path}:{n}"
        if ("text" in obj) == ("messages" in obj):
            found = ", ".join(sorted(obj)) or "none"
            raise EvalDataError(
                f"{where}: each line needs exactly one of `text` or `messages` (keys found: "
                f"{found})."
            )
        if "text" in obj:
            if not isinstance(obj["text"], str) or not obj["text"].strip():
                raise EvalDataError(f"{where}: `text` must be a non-empty string.")
            docs.append(Document(text=obj["text"]))
        else:
            docs.append(Document(messages=_messages(obj["messages"], where)))
    return DataSet(name, path, docs)


_PROBE_KEYS = {
    "tool-calls": {"prompt", "messages", "expected", "id"},
    "contains": {"prompt", "messages", "must_contain", "must_not_contain", "case_sensitive", "id"},
}


def _phrases(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EvalDataError(f"{where}: `{key}` must be a list of non-empty strings.")
    return tuple(value)


def _probe(kind: ProbeKind, obj: dict[str, Any], where: str) -> Probe:
    unknown = sorted(set(obj) - _PROBE_KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(_PROBE_KEYS[kind]))
        raise EvalDataError(f"{where}: unknown key(s) {', '.join(unknown)} ({kind}: {allowed}).")
    if ("prompt" in obj) == ("messages" in obj):
        raise EvalDataError(f"{where}: each probe needs exactly one of `prompt` or `messages`.")
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise EvalDataError(f"{where}: `prompt` must be a string.")
    messages = _messages(obj["messages"], where) if "messages" in obj else None
    ident = None if obj.get("id") is None else str(obj["id"])
    if kind == "tool-calls":
        exp = obj.get("expected")
        if not isinstance(exp, dict) or not isinstance(exp.get("name"), str):
            raise EvalDataError(
                f'{where}: `expected` must be an object like {{"name": "fn", "arguments": {{...}}}}.'
            )
        args = exp.get("arguments", {})
        if not isinstance(args, dict) or set(exp) - {"name", "arguments"}:
            raise EvalDataError(
                f"{where}: `expected` holds `name` and an `arguments` object, nothing else."
            )
        return Probe(prompt, messages, {"name": exp["name"], "arguments": args}, id=ident)
    must = _phrases(obj, "must_contain", where)
    must_not = _phrases(obj, "must_not_contain", where)
    if not must and not must_not:
        raise EvalDataError(f"{where}: give `must_contain` or `must_not_contain` phrases.")
    case = obj.get("case_sensitive", False)
    if not isinstance(case, bool):
        raise EvalDataError(f"{where}: `case_sensitive` must be true or false.")
    return Probe(prompt, messages, None, must, must_not, case, ident)


def load_probe_set(kind: str, name: str, path: str | Path) -> ProbeSet:
    """Read and validate a probe file of ``kind`` (``tool-calls`` or ``contains``)."""
    if kind not in PROBE_KINDS:
        raise EvalDataError(f"unknown probe kind {kind!r}; use one of {', '.join(PROBE_KINDS)}.")
    k: ProbeKind = kind
    path = Path(path)
    return ProbeSet(name, k, path, [_probe(k, obj, f"{path}:{n}") for n, obj in _read_lines(path)])


def check_unique_names(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise EvalDataError(
                f"two evaluation sets are named {n!r}; name them apart with NAME=FILE."
            )
        seen.add(n)
