"""The one table renderer: aligned plain text for the terminal, and Markdown.

Every table Alloy prints or writes goes through here (the compatibility report, the analysis,
the merge report and model card, the LoRA READMEs), so they align alike. It sits at the bottom
of the layers: `alloy.arch` and `alloy.report` both use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Sequence


def _widths(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]


def aligned(
    rows: Sequence[Sequence[str]],
    *,
    right: Container[int] = (),
    indent: str = "",
    rule: bool = False,
) -> list[str]:
    """The lines of ``rows`` (the first is the header) in columns two spaces apart; the
    columns in ``right`` are right-aligned; trailing blanks are dropped. ``rule`` puts a line
    of dashes under the header."""
    widths = _widths(rows)
    if rule:
        rows = [rows[0], ["-" * w for w in widths], *rows[1:]]
    return [
        (
            indent
            + "  ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        ).rstrip()
        for r in rows
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Container[int] = (),
    padded: bool = False,
) -> str:
    """A Markdown table; ``padded`` aligns the cells, so the source reads as plain text too.
    ``|`` and line breaks inside a cell are escaped."""
    cells = [[_cell(str(c)) for c in r] for r in [headers, *rows]]
    widths = _widths(cells) if padded else [0] * len(headers)

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    def rule(i: int, w: int) -> str:
        if i in right:  # ---: or, padded, as wide as the column
            return "-" * (w + 1) + ":" if padded else "---:"
        return "-" * (w + 2) if padded else "---"

    sep = "|" + "|".join(rule(i, w) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def percent(
    v: float | None, digits: int | Callable[[float], int] = 1, *, floor: bool = False
) -> str:
    """The share ``v`` (0.25) as a table cell ("25.0%"), "-" for None. ``digits``: the
    decimals, or a function of the share that gives them (more for small shares); ``floor``
    rounds down instead of to nearest (79.6% at 0 digits shows as 79%)."""
    if v is None:
        return "-"
    d = digits(v) if callable(digits) else digits
    shown = 100 * v
    if floor:
        scale = 10**d
        shown = math.floor(shown * scale + 1e-9) / scale
    return f"{shown:.{d}f}%"
