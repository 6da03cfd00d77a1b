"""The one table renderer, on tables small enough to write out by hand."""

from __future__ import annotations

from alloy.tabulate import aligned, markdown


def test_aligned_columns_rule_and_indent() -> None:
    rows = [["what", "n"], ["q_proj", "12"], ["up", "3"]]
    assert aligned(rows, right={1}, rule=True) == [
        "what     n",  # "what" padded to 6, two spaces, "n" right-aligned in 2
        "------  --",
        "q_proj  12",
        "up       3",
    ]
    assert aligned(rows, indent="  ") == ["  what    n", "  q_proj  12", "  up      3"]


def test_markdown_plain_padded_and_escaped() -> None:
    assert (
        markdown(["a", "bb"], [["x|y", "1"]], right={1}) == "| a | bb |\n|---|---:|\n| x\\|y | 1 |"
    )
    assert markdown(["module", "r"], [["q", "16"]], padded=True) == (
        "| module | r  |\n|--------|----|\n| q      | 16 |"
    )
