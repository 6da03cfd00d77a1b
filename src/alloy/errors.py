"""Alloy's errors. Every error says what is wrong, where, and what to do next.

::

    AlloyError
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
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class AlloyError(Exception):
    """Base class of every error Alloy raises on purpose."""


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
    """The config has one or more problems; all of them are listed."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in the merge config" + (
            f" {source}" if source else ""
        )
        body = "\n".join("  - " + i.render(source) for i in self.issues)
        super().__init__(f"{head}:\n{body}")


class UnknownMethodError(AlloyError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        close = closest(name, known)
        hint = f" Did you mean {close!r}?" if close else ""
        super().__init__(
            f"unknown merge method {name!r}.{hint} Known methods: {', '.join(known)} "
            "(`alloy methods` describes them)."
        )
        self.name = name


class ModelNotFoundError(AlloyError):
    pass


class CheckpointError(AlloyError):
    pass


class IncompatibleModelsError(AlloyError):
    """The models cannot be merged as asked. ``report`` (an `alloy.arch.compat.CompatReport`)
    holds the table of differences when the compatibility check found them."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class MergeComputationError(AlloyError):
    pass


class LoraNotSupportedError(AlloyError):
    """A PEFT adapter whose merge is not ``W + scale·B@A``; the message names its type."""


class OutputError(AlloyError):
    pass


class EvalDataError(AlloyError):
    pass


class EvaluationError(AlloyError):
    pass


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
