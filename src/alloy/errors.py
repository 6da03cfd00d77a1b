"""Alloy's errors. Every error says what is wrong, where, and what to do next.

::

    AlloyError
    ├── ConfigError              the YAML config is invalid (all problems, with line numbers)
    ├── UnknownMethodError       merge_method names no registered method
    ├── ModelNotFoundError       a model reference resolves to nothing on disk
    ├── CheckpointError          a checkpoint is missing, truncated, corrupt or unsafe
    ├── IncompatibleModelsError  tensors missing from an input, shapes that differ, layers out of range
    ├── MergeComputationError    a method failed or produced NaN/Inf
    ├── LoraNotSupportedError    an input uses `base+adapter` (arrives with the LoRA work)
    └── OutputError              the output directory cannot be written, or exists
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass


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
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
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
    pass


class MergeComputationError(AlloyError):
    pass


class LoraNotSupportedError(AlloyError):
    pass


class OutputError(AlloyError):
    pass


def closest(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``word``, if any is close enough to suggest."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return match[0] if match else None
