"""Where Alloy's vocabulary alignment differs from mergekit 0.1.5's, one test each
(docs/tokenizers.md, "Differences from mergekit")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from checkpoints import load_state_dict
from safetensors.torch import save_file
from vocab_models import VocabModels

import alloy
from alloy.config.schema import ModelRef
from alloy.io.sources import MemorySource
from alloy.plan.vocab import Fills, RowMap
from alloy.plan.vocab_read import AlignedReader


def _config(m: VocabModels, order: list[Path], **tokenizer: Any) -> dict[str, Any]:
    return {
        "merge_method": "linear",
        "base_model": str(m.base),
        "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in order],
        "tokenizer": {"source": "union", **tokenizer},
    }


def _vocab(path: Path) -> dict[str, int]:
    import transformers

    return dict(transformers.AutoTokenizer.from_pretrained(str(path)).get_vocab())


def test_new_tokens_follow_the_config_order(vocab_models: VocabModels, tmp_path: Path) -> None:
    """mergekit orders several fine-tunes' new tokens by a set's iteration order (it changes
    with the hash seed); Alloy by the order the config lists the models."""
    m = vocab_models
    one = alloy.merge(_config(m, [m.base, m.ft_added, m.ft_reordered]), tmp_path / "a").out_dir
    two = alloy.merge(_config(m, [m.base, m.ft_reordered, m.ft_added]), tmp_path / "b").out_dir
    v1, v2 = _vocab(one), _vocab(two)
    assert v1["zebra"] < v1["<tool>"] and v2["<tool>"] < v2["zebra"]
    assert set(v1) == set(v2)


def test_a_listed_token_without_source_takes_the_default_rule(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    """mergekit raises NotImplementedError on a listed token with no `source` that some model
    lacks; Alloy adds it and fills it by the default rule."""
    m = vocab_models
    config = _config(m, [m.base, m.ft_added], tokens={"zebra": {}, "<brand_new>": None})
    out = alloy.merge(config, tmp_path / "out").out_dir
    embed = load_state_dict(out)["model.embed_tokens.weight"]
    vocab = _vocab(out)
    ft = load_state_dict(m.ft_added)["model.embed_tokens.weight"]
    # linear with weights 1 and 1 (normalized): the mean of two copies of ft_added's row
    assert torch.allclose(embed[vocab["zebra"]], ft[_vocab(m.ft_added)["zebra"]], atol=1e-7)
    assert torch.count_nonzero(embed[vocab["<brand_new>"]]) == 0
    prov = json.loads((out / "report.json").read_text())["tokenizer"]["tensors"]
    embed_prov = prov["model.embed_tokens.weight"]
    assert embed_prov["from"] == {"all_models": 120, "one_model": 3, "zero": 1}
    assert embed_prov["named"] == {
        "one_model": ["<|im_start|>", "<|im_end|>", "zebra"],
        "zero": ["<brand_new>"],
    }


def test_fill_rows_are_averaged_in_float32() -> None:
    """mergekit averages a missing token's rows in the inputs' dtype; Alloy in float32, rounded
    once to the input's dtype."""
    rows_of = [[2.53125], [1.3984375], [1.609375]]  # three models' rows of one token
    refs = [ModelRef(x) for x in "abc"]
    sources = {
        r: MemorySource({"e": torch.tensor([[9.0], row], dtype=torch.bfloat16)})
        for r, row in zip(refs, rows_of)
    }
    fills = Fills(tuple((r, "e") for r in refs), torch.tensor([0]), torch.tensor([[1, 1, 1]]))
    rm = RowMap(refs[0], "e", torch.tensor([-1, 0]), fills, 2)  # output row 0: the mean
    rows = AlignedReader(sources).read(rm, None)
    exact = sum(torch.tensor(v, dtype=torch.bfloat16).float() for v in rows_of) / 3
    assert torch.equal(rows[0], exact.to(torch.bfloat16))  # 1.84375
    assert rows[1].item() == 9.0  # its own row 0
    in_bf16 = torch.zeros(1, dtype=torch.bfloat16)
    for v in rows_of:
        in_bf16 = in_bf16 + torch.tensor(v, dtype=torch.bfloat16)
    assert (in_bf16 / 3).item() == 1.8515625 != rows[0].item()  # mergekit's rounding


def _padded(src: Path, dst: Path, rows: int) -> Path:
    """``src`` with embedding and head padded to ``rows`` rows (no token) and vocab_size set."""
    shutil.copytree(src, dst)
    weights = load_state_dict(src)
    gen = torch.Generator().manual_seed(5)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        t = weights[name]
        extra = torch.randn((rows - t.shape[0], t.shape[1]), generator=gen)
        weights[name] = torch.cat([t, extra]).contiguous()
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((dst / "config.json").read_text())
    cfg["vocab_size"] = rows
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_shared_vocabulary_with_padding_rows_keeps_them(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    """`tokenizer_source: base` over models that share one vocabulary aligns nothing, so
    embedding rows beyond the tokenizer (padding) are kept (mergekit cuts the embeddings to the
    tokenizer's length); a union drops them and says so."""
    a = _padded(vocab_models.base, tmp_path / "a", 128)
    b = _padded(vocab_models.base, tmp_path / "b", 128)
    models = [{"model": str(p), "parameters": {"weight": 0.5}} for p in (a, b)]
    kept = alloy.merge(
        {"merge_method": "linear", "models": models, "tokenizer_source": "base"}, tmp_path / "kept"
    )
    assert load_state_dict(kept.out_dir)["lm_head.weight"].shape[0] == 128
    union = alloy.merge(
        {"merge_method": "linear", "models": models, "tokenizer_source": "union"},
        tmp_path / "union",
    )
    assert load_state_dict(union.out_dir)["lm_head.weight"].shape[0] == 120
    assert any("8 of its 128 embedding rows hold no token" in n for n in union.notes)


def test_stripping_the_base_tokenizer_drops_the_merges_that_make_removed_tokens(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    """A base whose tokenizer has tokens beyond its embedding rows: mergekit removes them but
    keeps the BPE merges that make them, and fails ("Token ... out of vocabulary"); Alloy drops
    those merges too, and the tokens come back at new ids from the model that has rows for
    them."""
    import pytest
    import transformers

    base = tmp_path / "short_base"
    shutil.copytree(vocab_models.base, base)
    weights = load_state_dict(base)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        weights[name] = weights[name][:118].contiguous()
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "vocab_size": 118}))
    config = {
        "merge_method": "linear",
        "base_model": str(base),
        "models": [
            {"model": str(base), "parameters": {"weight": 0.5}},
            {"model": str(vocab_models.ft_added), "parameters": {"weight": 0.5}},
        ],
        "tokenizer_source": "union",
    }
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    with pytest.raises(Exception, match="out of vocabulary"):
        options = MergeOptions(quiet=True, device="cpu")
        run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mk"), options=options)
    out = alloy.merge(config, tmp_path / "out").out_dir
    report = json.loads((out / "report.json").read_text())["tokenizer"]
    assert report["tokens"] == 123 and report["models"][str(base)]["tokens_kept"] == 118
    removed = [t for t, i in _vocab(vocab_models.base).items() if i >= 118]
    vocab = _vocab(out)
    assert removed and all(vocab[t] >= 118 for t in removed)
    embed = load_state_dict(out)["model.embed_tokens.weight"]
    ft_vocab, ft = _vocab(vocab_models.ft_added), load_state_dict(vocab_models.ft_added)
    for t in removed:  # only ft_added has rows for them: its rows stand in for the base's
        assert torch.allclose(embed[vocab[t]], ft["model.embed_tokens.weight"][ft_vocab[t]])
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tok.convert_ids_to_tokens(tok(" ".join(removed))["input_ids"])
