"""The one table renderer, on tables small enough to write out by hand."""

from __future__ import annotations

from alloy.tabulate import aligned, markdown, percent


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


def test_percent_rounding_is_the_callers() -> None:
    assert percent(0.25) == "25.0%"
    assert percent(None) == "-"
    # rounded to nearest by default, down with floor: 79.6% misses an 80% target
    assert percent(0.796, 0) == "80%"
    assert percent(0.796, 0, floor=True) == "79%"
    assert percent(0.8, 0, floor=True) == "80%"  # not 79%: 100 * 0.8 may round below 80
    # the decimals as a function of the share: small shares keep two
    small = lambda v: 2 if v < 0.1 else 0  # noqa: E731
    assert percent(0.04123, small) == "4.12%"
    assert percent(0.372, small) == "37%"
