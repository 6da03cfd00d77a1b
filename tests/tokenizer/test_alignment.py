"""Vocabulary alignment in Alloy alone: rows gathered per chunk equal rows gathered whole, the
plan and report carry the provenance, the output loads with transformers, merges without
alignment are unchanged, and what cannot be aligned is a clear error."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoints import ModelSet, load_state_dict
from vocab_models import VocabModels

import alloy
from alloy.config.load import load_config
from alloy.errors import ConfigError, IncompatibleModelsError
from alloy.io.sources import MemorySource
from alloy.plan.describe import describe_plan
from alloy.plan.models import open_models_of
from alloy.plan.planner import build_plan
from alloy.plan.vocab_read import gather


def _union(m: VocabModels, **tokenizer: Any) -> dict[str, Any]:
    return {
        "merge_method": "linear",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.base), "parameters": {"weight": 0.5}},
            {"model": str(m.ft_added), "parameters": {"weight": 0.25}},
            {"model": str(m.ft_reordered), "parameters": {"weight": 0.25}},
        ],
        "tokenizer": {"source": "union", **tokenizer},
    }


def test_gather_reads_any_ids_in_runs() -> None:
    t = torch.arange(200 * 3, dtype=torch.float32).reshape(200, 3)
    ids = torch.tensor([199, 0, 5, 5, 64, 63, 150, 1])
    assert torch.equal(gather(MemorySource({"w": t}), "w", ids), t[ids])
    assert gather(MemorySource({"w": t}), "w", torch.tensor([], dtype=torch.int64)).shape == (0, 3)


class _Counting(MemorySource):
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(tensors)
        self.rows_read = 0

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        out = super().get(name, rows)
        self.rows_read += out.shape[0]
        return out


def test_gather_of_spread_ids_reads_about_what_it_wants() -> None:
    """Every 20th row, and rows in pairs: a run reads at most twice the rows it wants,
    never the whole span of the ids."""
    t = torch.randn(10_000, 2)
    for ids in (
        torch.arange(0, 10_000, 20),
        torch.arange(0, 10_000, 3),
        torch.randperm(10_000)[:700],
    ):
        src = _Counting({"w": t})
        assert torch.equal(gather(src, "w", ids), t[ids])
        assert src.rows_read <= 2 * ids.unique().numel()


def test_small_chunks_give_the_same_bytes(
    vocab_models: VocabModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _union(vocab_models, pad_to_multiple_of=32)
    whole = load_state_dict(alloy.merge(config, tmp_path / "whole").out_dir)
    executor = importlib.import_module("alloy.plan.executor")
    vocab_read = importlib.import_module("alloy.plan.vocab_read")
    monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 5 * 16)  # 5 rows of 16 per chunk
    monkeypatch.setattr(vocab_read, "GAP", 0)  # every id its own read
    monkeypatch.setattr(vocab_read, "MEAN_ROWS_BUDGET", 7 * 16)
    chunked = load_state_dict(alloy.merge(config, tmp_path / "chunked").out_dir)
    assert set(whole) == set(chunked)
    for name in whole:
        assert torch.equal(whole[name], chunked[name]), name


def test_rows_follow_the_tokens(vocab_models: VocabModels, tmp_path: Path) -> None:
    """The merged row of each token is the weighted sum of each model's row of that token (by
    text), and a token one model has takes that model's row in the others."""
    import transformers

    m = vocab_models
    out = alloy.merge(_union(m), tmp_path / "out", copy_tokenizer=True).out_dir
    merged = load_state_dict(out)["model.embed_tokens.weight"]
    vocab = transformers.AutoTokenizer.from_pretrained(str(out)).get_vocab()
    rows = {}
    for p in (m.base, m.ft_added, m.ft_reordered):
        v = transformers.AutoTokenizer.from_pretrained(str(p)).get_vocab()
        rows[p] = (v, load_state_dict(p)["model.embed_tokens.weight"])
    for token, i in vocab.items():
        have = [(v, e) for v, e in rows.values() if token in v]
        if len(have) == 3:
            want = sum(w * e[v[token]] for w, (v, e) in zip((0.5, 0.25, 0.25), have))
        else:
            assert len(have) == 1
            v, e = have[0]
            want = e[v[token]]  # weights sum to 1: every model holds the one model's row
        assert torch.allclose(merged[i], want, atol=1e-6), token


def test_output_loads_and_report_records_provenance(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    import transformers

    out = alloy.merge(_union(vocab_models, pad_to_multiple_of=64), tmp_path / "out").out_dir
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert model.config.vocab_size == 128 and len(tok) == 125
    ids = tok("the quick zebra <tool>", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == 128
    report = json.loads((out / "report.json").read_text())
    assert report["tokenizer"]["tensors"]["lm_head.weight"]["padding"] == 3
    md = (out / "report.md").read_text()
    assert "## Tokenizer" in md and "only one model has it" in md and "`zebra`" in md


def test_the_plan_holds_the_alignment_and_no_open_file(vocab_models: VocabModels) -> None:
    config = load_config(_union(vocab_models))
    with open_models_of(config) as models:
        plan = build_plan(config, models)
    assert plan.vocab is not None and plan.vocab.size == 125 and plan.vocab.files is not None
    assert "tokenizer.json" in plan.vocab.files
    embed = next(j for j in plan.jobs if j.name == "model.embed_tokens.weight")
    assert embed.info.shape == (125, 16)
    assert all(r.vocab is not None for r in embed.all_inputs)
    other = next(j for j in plan.jobs if j.name == "model.norm.weight")
    assert all(r.vocab is None for r in other.all_inputs)
    assert plan.output_config["vocab_size"] == 125
    assert "vocabulary: union, 125 tokens in 125 rows (aligned)" in describe_plan(plan)


def test_merges_without_alignment_are_unchanged(llama_models: ModelSet, tmp_path: Path) -> None:
    """Identical tokenizers: `tokenizer_source: base` aligns nothing and changes no byte."""
    base = {
        "merge_method": "linear",
        "models": [
            {"model": str(llama_models.ft1), "parameters": {"weight": 0.5}},
            {"model": str(llama_models.ft2), "parameters": {"weight": 0.5}},
        ],
    }
    config = load_config({**base, "tokenizer_source": "base"})
    with open_models_of(config) as models:
        assert build_plan(config, models).vocab is None
    plain = alloy.merge(base, tmp_path / "plain").out_dir
    with_base = alloy.merge({**base, "tokenizer_source": "base"}, tmp_path / "base").out_dir
    for f in ("model.safetensors", "config.json"):
        assert (plain / f).read_bytes() == (with_base / f).read_bytes()


def test_different_vocabularies_without_a_tokenizer_setting_are_refused(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    config = _union(vocab_models)
    del config["tokenizer"]
    with pytest.raises(IncompatibleModelsError) as e:
        alloy.merge(config, tmp_path / "out")
    assert "tokenizer_source: union" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_token_source_outside_the_merge_is_an_error(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    m = vocab_models
    config = _union(m, tokens={"zebra": {"source": str(m.base), "force": True}})
    with pytest.raises(ConfigError) as e:
        alloy.merge(config, tmp_path / "out")
    assert "has no token 'zebra'" in str(e.value) and "tokenizer.tokens.zebra" in str(e.value)
    other = str(tmp_path / "elsewhere")
    config = _union(
        m, tokens={"zebra": {"source": {"kind": "model_token", "model": other, "token_id": 1}}}
    )
    with pytest.raises(ConfigError) as e:
        alloy.merge(config, tmp_path / "out")
    assert "which this tensor does not merge" in str(e.value)
