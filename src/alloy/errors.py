"""Alloy's errors. Every error says what is wrong, where, and what to do next.

::

    AlloyError                   the root: never raised itself, only its leaves are
    ├── UsageError               an argument or option has a value Alloy cannot use (names it)
    │   └── ModelRefSyntaxError  a model reference that is not ``path[@rev][+adapter[@rev]]``
    ├── DeviceError              the device asked for is unknown or not available
    ├── ConfigError              the YAML config is invalid (all problems, with line numbers)
    ├── UnknownMethodError       merge_method names no registered method
    ├── ModelNotFoundError       a model reference resolves to nothing on disk
    ├── CheckpointError          a checkpoint is missing, truncated, corrupt or unsafe
    ├── IncompatibleModelsError  architectures, tensors or shapes that differ, layers out of range (`.report`)
    ├── MergeComputationError    a method failed or produced NaN/Inf
    ├── LoraNotSupportedError    an adapter of a kind Alloy does not apply (DoRA, IA3, LoHa, ...)
    ├── OutputError              the output directory cannot be written, or exists
    ├── EvalDataError            an evaluation data or probe file is invalid (file, line, key)
    └── EvaluationError          evaluation cannot run (no transformers, a model or tokenizer
                                 that does not load, chat data without a chat template)

Several models failing at once raise one error that is an instance of each of its children's
classes (`several`), so ``except ModelNotFoundError`` still catches a list of missing models.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Protocol


class AlloyError(Exception):
    """Base class of every error Alloy raises on purpose; raised only as one of its leaves."""


class UsageError(AlloyError):
    """An argument (or its command-line option) has a value Alloy cannot use; the message
    names the argument, the option and the values it accepts."""


class ModelRefSyntaxError(UsageError):
    """A model reference that is not ``path[@revision][+adapter[@revision]]`` or mergekit's
    mapping form."""


class DeviceError(AlloyError):
    """The device asked for (``--device``) is unknown, or torch sees no such device."""


def _enclosing(path: str) -> list[str]:
    """``a[0].b.c`` -> ``a[0].b.c``, ``a[0].b``, ``a[0]``, ``a``."""
    out = [path]
    while path:
        path = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", path) if re.search(r"[.\[]", path) else ""
        if path:
            out.append(path)
    return out


def _with_line(issue: ConfigIssue, lines: Mapping[str, int]) -> ConfigIssue:
    if issue.line is not None:
        return issue
    line = next((lines[p] for p in _enclosing(issue.path) if p in lines), None)
    return replace(issue, line=line)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file."""

    message: str
    path: str  # dotted location in the document, e.g. "slices[0].sources[1].layer_range"
    line: int | None = None  # 1-based line in the YAML file

    def render(self, source: str | None = None) -> str:
        where = f"{source}:" if source else ""
        if self.line is not None:
            where += f"{self.line}: "
        elif where:
            where += " "
        loc = f"{self.path}: " if self.path else ""
        return f"{where}{loc}{self.message}"


class ConfigError(AlloyError):
    """The config has one or more problems; all of them are listed, each with its line.

    ``lines`` (a parsed config's ``MergeConfig.lines``) gives the line of an issue found after
    parsing: that of its location, or of the nearest enclosing one."""

    def __init__(
        self,
        issues: Sequence[ConfigIssue],
        source: str | None = None,
        lines: Mapping[str, int] | None = None,
    ) -> None:
        self.issues = [_with_line(i, lines) for i in issues] if lines else list(issues)
        self.source = source
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in the merge config" + (
            f" {source}" if source else ""
        )
        body = "\n".join("  - " + i.render(source) for i in self.issues)
        super().__init__(f"{head}:\n{body}")


class UnknownMethodError(AlloyError):
    """``merge_method`` names no registered method; the message lists them with a did-you-mean."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        close = closest(name, known)
        hint = f" Did you mean {close!r}?" if close else ""
        super().__init__(
            f"unknown merge method {name!r}.{hint} Known methods: {', '.join(known)} "
            "(`alloy methods` describes them)."
        )
        self.name = name


class ModelNotFoundError(AlloyError):
    """A model reference resolves to nothing: no such directory, not in the Hugging Face cache,
    or the hub refused or could not be reached (the cause is kept)."""


class CheckpointError(AlloyError):
    """A checkpoint (or adapter) is missing files, truncated, corrupt, or unsafe to load."""


class DifferencesReport(Protocol):
    """What an `IncompatibleModelsError` carries when the compatibility check found differences
    (an `alloy.arch.differences.CompatReport`; named by its use, so that the bottom layer
    imports nothing above it)."""

    def mergeable(self, allow_crimes: bool = False) -> bool: ...


class IncompatibleModelsError(AlloyError):
    """The models cannot be merged as asked. ``report`` (an `alloy.arch.differences.CompatReport`)
    holds the table of differences when the compatibility check found them."""

    def __init__(self, message: str, report: DifferencesReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class MergeComputationError(AlloyError):
    """A method failed on a tensor, or produced NaN/Inf; the message names the tensor."""


class LoraNotSupportedError(AlloyError):
    """A PEFT adapter whose merge is not ``W + scale·B@A``; the message names its type."""


class OutputError(AlloyError):
    """The output directory cannot be written, exists, or is (or holds) an input."""


class EvalDataError(AlloyError):
    """An evaluation data or probe file is invalid; the message names the file, line and key."""


class EvaluationError(AlloyError):
    """Evaluation cannot run: transformers missing, a model or tokenizer that does not load,
    chat data without a chat template."""


@cache
def _union(kinds: tuple[type[AlloyError], ...]) -> type[AlloyError]:
    """The error class that is each of ``kinds`` (in order), for `several`."""
    return type("|".join(k.__name__ for k in kinds), kinds, {"__module__": __name__})


def several(errors: Sequence[AlloyError]) -> AlloyError:
    """One error for the problems of several models, listing each.

    One problem is returned as it is. Several give an error that is an instance of each
    problem's class (``except CheckpointError`` catches a list in which one checkpoint is
    corrupt), with the problems in ``.errors`` and the first as its cause."""
    if not errors:
        raise ValueError("several() needs at least one error")
    if len(errors) == 1:
        return errors[0]
    kinds = tuple(dict.fromkeys(type(e) for e in errors))
    kind = kinds[0] if len(kinds) == 1 else _union(kinds)
    combined = kind.__new__(kind)
    AlloyError.__init__(combined, "\n".join(f"- {e}" for e in errors))
    combined.errors = list(errors)  # type: ignore[attr-defined]
    combined.__cause__ = errors[0]
    return combined


def _osa_distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two adjacent letters as one edit."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def closest(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``word`` (typos, swapped letters), if any is close enough."""
    if not candidates:
        return None
    lowered = word.lower()
    best = min(
        candidates,
        key=lambda c: (_osa_distance(lowered, c.lower()), abs(len(c) - len(word)), c),
    )
    limit = max(2, len(word) // 3)
    if _osa_distance(lowered, best.lower()) <= limit:
        return best
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None
