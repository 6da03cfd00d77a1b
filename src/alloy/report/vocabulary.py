"""The report's Tokenizer section: where each token's embedding and head rows came from.

Drawn from report.json's ``tokenizer`` record (`alloy.plan.vocab.VocabPlan.provenance`),
present only when the merge aligned vocabularies (``tokenizer:`` / ``tokenizer_source``).
"""

from __future__ import annotations

from typing import Any

from alloy.report.blocks import Block, Bullets, Heading, Para, Table

# what each provenance count means, in the order the table lists them
KINDS = {
    "all_models": "every model has it: each model's own row",
    "base": "some models lack it: the base model's row stands in",
    "one_model": "only one model has it: its row stands in for the others",
    "averaged": "several models have it: the mean of their rows stands in",
    "listed": "`tokenizer.tokens` names the source for the models that lack it",
    "forced": "`tokenizer.tokens` with `force`: that source for every model",
    "zero": "no model has it: zeros",
}
SHOWN = 12  # tokens named per kind in the text


def vocabulary_blocks(report: dict[str, Any]) -> list[Block]:
    """The Tokenizer section's blocks ([] when the merge did not align vocabularies)."""
    rec = report.get("tokenizer")
    if not rec:
        return []
    pad = rec.get("pad_to_multiple_of")
    head = (
        f"The output vocabulary (`{rec['source']}`) has {rec['tokens']} tokens"
        + (
            f", padded to {rec['rows']} rows (a multiple of {pad})"
            if rec["rows"] != rec["tokens"]
            else ""
        )
        + f"; {rec.get('added_count', 0)} tokens are new to the base tokenizer."
    )
    blocks: list[Block] = [Heading("Tokenizer"), Para(head)]
    models = rec.get("models", {})
    blocks.append(
        Table(
            ["model", "vocabulary size", "tokens of the output it has"],
            [[f"`{m}`", str(v["rows"]), str(v.get("tokens_kept", ""))] for m, v in models.items()],
            {1, 2},
        )
    )
    for name, t in rec.get("tensors", {}).items():
        counts = t.get("from", {})
        rows = [[k, str(counts[k]), text] for k, text in KINDS.items() if counts.get(k)]
        if t.get("padding"):
            rows.append(["padding", str(t["padding"]), "padding rows: the mean of the token rows"])
        blocks += [
            Para(f"`{name}`: where each output row came from"),
            Table(["rows", "count", "meaning"], rows, {1}),
        ]
        named = t.get("named", {})
        items = [
            f"{k}: "
            + ", ".join(f"`{_show(tok)}`" for tok in toks[:SHOWN])
            + (f" and {len(toks) - SHOWN} more" if len(toks) > SHOWN else "")
            for k, toks in named.items()
            if toks
        ]
        if items:
            blocks.append(Bullets(items))
    return blocks


def _show(token: str) -> str:
    return token.replace("`", "'")
