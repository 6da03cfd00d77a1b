"""Rendering pieces: the inventory from any records, the model card section, HTML escaping."""

from __future__ import annotations

from pathlib import Path

from alloy.report.blocks import Para, Table, table_text, to_html, to_markdown
from alloy.report.card import EVAL_BEGIN, EVAL_END, set_card_evaluation
from alloy.report.inventory import inventory_table


def test_inventory_renders_whatever_fields_the_records_hold() -> None:
    records = [
        {"reference": "org/a", "parameters": 1234567, "dtypes": {"bfloat16": 290}},
        {"reference": "org/b", "parameters": 7, "architecture_hash": "3f9a", "tied": True},
    ]
    t = inventory_table(records)
    assert t.headers == ["reference", "parameters", "dtypes", "architecture hash", "tied"]
    assert t.rows == [
        ["org/a", "1,234,567", "bfloat16: 290", "", ""],
        ["org/b", "7", "", "3f9a", "yes"],
    ]
    assert t.right == {1}
    md = to_markdown([t])
    assert md.splitlines()[1] == "|---|---:|---|---|---|"
    assert "| org/a | 1,234,567 | bfloat16: 290 |  |  |" in md


def test_card_section_is_inserted_once_then_replaced(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("# m\n\n## Models merged\n\n- a\n\n## Configuration\n\n```yaml\nx: 1\n```\n")
    set_card_evaluation(card, "## Evaluation\n\nfirst\n")
    text = card.read_text()
    assert text.index(EVAL_BEGIN) < text.index("first") < text.index("## Configuration")
    set_card_evaluation(card, "## Evaluation\n\nsecond\n")
    text = card.read_text()
    assert "first" not in text and text.count(EVAL_BEGIN) == 1 and text.count(EVAL_END) == 1
    assert text.index("second") < text.index("## Configuration")


def test_html_escapes_text_and_renders_code_spans(tmp_path: Path) -> None:
    page = to_html([Para("a <b> & `x<y`"), Table(["h|1"], [["<td>"]], {0})], "t <1>", tmp_path)
    assert "<p>a &lt;b&gt; &amp; <code>x&lt;y</code></p>" in page
    assert '<td class="num">&lt;td&gt;</td>' in page and "<title>t &lt;1&gt;</title>" in page
    assert to_markdown([Table(["h|1"], [["a|b"]])]).splitlines()[2] == "| a\\|b |"


def test_text_table_aligns_numbers_right() -> None:
    t = Table(["set", "value"], [["persona", "1.5"], ["g", "12.25"]], {1})
    assert table_text(t).splitlines() == [
        "set      value",
        "-------  -----",
        "persona    1.5",
        "g        12.25",
    ]
