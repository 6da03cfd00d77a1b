"""The demo's parts: tokenizer, packing and mixing of training rows, retention, the report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alloy.demo.corpora import CorpusSizes, generate_corpora
from alloy.demo.results import (
    ModelResult,
    comparison_table,
    fill_retention,
    verdicts,
    write_report,
)
from alloy.demo.tokenizer import encode_examples, save_tokenizer, train_tokenizer
from alloy.demo.train import TrainSettings, mix, pack, torch_threads, training_rows
from alloy.evaluate.compare import retention

SMALL = CorpusSizes(general_train=200, skill_train=120, held_out=30, probes=10)


def test_tokenizer_loads_in_transformers_and_round_trips(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    corpora = generate_corpora(0, SMALL)
    texts = [t for c in corpora.values() for t in c.train]
    tok = train_tokenizer(texts, 400)
    assert train_tokenizer(texts, 400).get_vocab() == tok.get_vocab()  # deterministic
    save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(loaded) == 400
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    for text in [*corpora["tools"].held_out[:5], 'unseen: {"x": "ümlaut"}']:
        ids = loaded(text)["input_ids"]
        assert ids[0] == 1 and 2 not in ids  # <s> first, no </s>: as evaluation sees a text
        assert loaded.decode(ids, skip_special_tokens=True) == text
    [ex] = encode_examples(loaded, ["user: hi"])
    assert ex[0] == 1 and ex[-1] == 2 and loaded.decode(ex[1:-1]) == "user: hi"


def test_pack_keeps_every_token_in_whole_rows() -> None:
    examples = [[1, i, i, 2] for i in range(10, 35)]  # 25 examples, 100 tokens
    rows = pack(examples, 8, torch.Generator().manual_seed(0))
    assert rows.shape == (12, 8)  # 96 of the 100 tokens: the last partial row is dropped
    groups = rows.view(-1, 4).tolist()  # whole examples, in a shuffled order
    assert all(g[0] == 1 and g[1] == g[2] and g[3] == 2 for g in groups)
    middles = [g[1] for g in groups]
    assert len(set(middles)) == 24 and set(middles) < set(range(10, 35))
    assert middles != sorted(middles)


def test_mix_adds_replay_to_its_share() -> None:
    skill = torch.zeros(40, 4, dtype=torch.long)
    replay = torch.ones(500, 4, dtype=torch.long)
    rows = mix(skill, replay, 0.6, torch.Generator().manual_seed(0))
    assert rows.shape == (100, 4) and int(rows[:, 0].sum()) == 60  # 60% of the rows replayed
    assert mix(skill, replay, 0.0, torch.Generator()).shape == (40, 4)


def test_training_rows_replay_the_other_kind_of_answers() -> None:
    """The base sees everything; the persona specialist replays general text and calls (never
    replies), the tools specialist general text and replies (never calls)."""
    s = TrainSettings(seq_len=4, base_plain_examples=3, base_skill_examples=1, replay=0.5)
    kinds = {"general": 7, "plain-replies": 8, "persona": 9, "plain-calls": 10, "tools": 11}
    examples = {k: [[v] * 4 for _ in range(30)] for k, v in kinds.items()}
    rows = training_rows(s, examples, seed=0)
    assert set(rows["base"][:, 0].tolist()) == {7, 8, 9, 10, 11}
    assert (rows["base"][:, 0] == 8).sum() == 3 and (rows["base"][:, 0] == 11).sum() == 1
    persona = rows["persona"][:, 0].tolist()
    assert persona.count(9) == 30 and 8 not in persona and 11 in persona and 10 in persona
    assert len(persona) == 60  # replay 0.5: as many replay rows as skill rows
    tools = rows["tools"][:, 0].tolist()
    assert tools.count(11) == 30 and 10 not in tools and {7, 8, 9} <= set(tools)


def test_torch_threads_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_retention_by_hand() -> None:
    assert retention(6.0, 2.0, 1.0, "lower") == pytest.approx(0.8)  # 4 of the 5 points gained
    assert retention(6.0, 1.0, 1.0, "lower") == 1.0
    assert retention(6.0, 7.0, 1.0, "lower") == pytest.approx(-0.2)  # worse than the base
    assert retention(6.0, 2.0, 6.5, "lower") is None  # the specialist gained nothing
    assert retention(6.0, math.nan, 1.0, "lower") is None
    # higher is better (a probe's rate): 0.76 of a 0 -> 0.95 gain is 80% of it
    assert retention(0.0, 0.76, 0.95, "higher") == pytest.approx(0.8)
    assert retention(0.5, 0.7, 0.5, "higher") is None
    assert retention(0.0, math.nan, 1.0, "higher") is None


def _result(label: str, family: str, role: str, persona: float, tools: float) -> ModelResult:
    values = {"general/perplexity": 2.0, "persona/perplexity": persona, "tools/perplexity": tools}
    values |= {"tools_probes/json": 0.5, "tools_probes/name": 0.375, "tools_probes/exact": 0.25}
    values["persona_probes/phrases"] = 1.0
    name = label.split("-")[-1]
    return ModelResult(label, family, role, name, "/x", values)


def test_fill_retention_table_verdicts_and_report(tmp_path: Path) -> None:
    results = [
        _result("base", "", "base", 6.0, 4.0),
        _result("full-persona", "full", "specialist", 1.0, 5.0),
        _result("full-tools", "full", "specialist", 7.0, 1.0),
        _result("full-ties", "full", "merge", 1.5, 1.6),
        _result("full-linear", "full", "merge", 3.5, 1.5),
    ]
    results[3].recommended = True
    fill_retention(results)
    assert results[3].retention == pytest.approx({"persona": 0.9, "tools": 0.8})
    assert results[4].retention == pytest.approx({"persona": 0.5, "tools": 2.5 / 3})
    assert results[3].keeps_both and not results[4].keeps_both
    table = comparison_table(results)
    assert table.rows[3][:6] == ["full-ties (ties)", "2.00", "1.50", "1.60", "90%", "80%"]
    assert table.rows[0][4:10] == ["", "", "1.00", "0.50", "0.38", "0.25"]
    [line] = verdicts(results)
    assert line == (
        "full: keep >= 80% of both skills: recommended ties; below: linear. The recommended "
        "ties meets the target."
    )
    written = write_report(tmp_path, results, ["a note"], {"size": "small"}, {})
    assert written == ["report.json", "report.md", "report.html", "retention.png"]
    md = (tmp_path / "report.md").read_text()
    assert "full-ties (ties)" in md and "a note" in md and "retention.png" in md
