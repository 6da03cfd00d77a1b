"""The result of a compatibility check: its differences, one column per model, as a table.

`alloy.arch.compat` finds the differences; this module holds them, renders the table that
`alloy check` prints and `alloy merge` stops with, and decides the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alloy.errors import IncompatibleModelsError
from alloy.tabulate import aligned

Level = Literal["blocks", "crime", "note"]
LEVELS: tuple[Level, ...] = ("blocks", "crime", "note")
MAX_TENSOR_ROWS = 12


@dataclass(frozen=True)
class Difference:
    """One way the models differ: a config field, a layer stack, a tensor or a tokenizer part."""

    kind: str  # "config", "layers", "tensor", "tokenizer"
    key: str
    values: tuple[str, ...]  # one per model of the report, "" where it does not apply
    level: Level
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "values": list(self.values),
            "level": self.level,
            "hint": self.hint,
        }


@dataclass
class CompatReport:
    """The differences among ``labels`` (one label per model, in order)."""

    labels: list[str]
    differences: list[Difference] = field(default_factory=list)
    architecture_hashes: list[str | None] = field(default_factory=list)

    def at(self, level: Level) -> list[Difference]:
        return [d for d in self.differences if d.level == level]

    def mergeable(self, allow_crimes: bool = False) -> bool:
        return not self.at("blocks") and (allow_crimes or not self.at("crime"))

    def verdict(self, allow_crimes: bool = False) -> str:
        blocks, crimes, notes = (len(self.at(lv)) for lv in LEVELS)
        if blocks:
            return (
                f"not mergeable: {blocks} blocking difference{'s' if blocks > 1 else ''}; "
                "the weights do not line up tensor by tensor."
            )
        if crimes and not allow_crimes:
            return (
                f"not mergeable as is: the architectures differ ({crimes} field"
                f"{'s' if crimes > 1 else ''}). --allow-crimes merges them anyway, tensor by "
                "tensor, where names and shapes agree."
            )
        tail = f" with --allow-crimes ({crimes} crime{'s' if crimes > 1 else ''})" if crimes else ""
        if notes:
            tail += f"; {notes} note{'s' if notes > 1 else ''}"
        return f"mergeable{tail}."

    def render(self, allow_crimes: bool = False) -> str:
        """The table of differences, one column per model, then hints and the verdict."""
        short = short_labels(self.labels)
        lines: list[str] = []
        if not self.differences:
            lines.append(f"the {len(self.labels)} models agree on every compared field.")
        else:
            shown = [d for d in self.differences if d.kind != "tensor"]
            tensors = [d for d in self.differences if d.kind == "tensor"]
            shown += tensors[:MAX_TENSOR_ROWS]
            head = ["what", "key", *short, "level"]
            rows = [[d.kind, d.key, *(v or "·" for v in d.values), d.level] for d in shown]
            lines += _table(head, rows)
            if len(tensors) > MAX_TENSOR_ROWS:
                lines.append(
                    f"  ... and {len(tensors) - MAX_TENSOR_ROWS} more tensors differ "
                    "(--json lists them all)"
                )
            hints = dict.fromkeys(f"{d.key}: {d.hint}" for d in shown if d.hint)
            if hints:
                lines += ["", *(f"- {h}" for h in hints)]
        lines += ["", "models:"]
        hashes = self.architecture_hashes or [None] * len(self.labels)
        for s, label, h in zip(short, self.labels, hashes):
            arch = f"  (architecture {h[:12]})" if h else ""
            lines.append(f"  {s} = {label}{arch}" if s != label else f"  {label}{arch}")
        lines += ["", self.verdict(allow_crimes)]
        return "\n".join(lines)

    def error_message(self, allow_crimes: bool = False) -> str:
        return (
            "the models cannot be merged as asked (`alloy check` prints this table):\n"
            + self.render(allow_crimes)
        )

    def to_dict(self, allow_crimes: bool = False) -> dict[str, Any]:
        return {
            "models": list(self.labels),
            "architecture_hashes": list(self.architecture_hashes),
            "mergeable": self.mergeable(allow_crimes),
            "mergeable_with_allow_crimes": self.mergeable(True),
            "verdict": self.verdict(allow_crimes),
            "differences": [d.to_dict() for d in self.differences],
        }

    def enforce(self, allow_crimes: bool, notes: list[str]) -> None:
        """Raise `IncompatibleModelsError` with the table unless mergeable; otherwise record
        crimes let through and notes in ``notes``."""
        if not self.mergeable(allow_crimes):
            raise IncompatibleModelsError(self.error_message(allow_crimes), report=self)
        crimes = self.at("crime")
        if crimes:
            listed = "; ".join(f"{d.key} ({' / '.join(d.values)})" for d in crimes)
            notes.append(f"--allow-crimes: merging models whose architectures differ: {listed}")
        for d in self.at("note"):
            notes.append(
                f"{d.kind} {d.key} differs ({' / '.join(v or '-' for v in d.values)})"
                + (f": {d.hint}" if d.hint else "")
            )


def short_labels(labels: Sequence[str]) -> list[str]:
    """Column titles: the last path component, or more of the path where those collide."""
    for depth in (1, 2, 3):
        short = ["/".join(Path(label).parts[-depth:]) or label for label in labels]
        if len(set(short)) == len(short):
            return short
    return list(labels)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return aligned([[_clip(c) for c in r] for r in [head, *rows]], indent="  ")


def _clip(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
