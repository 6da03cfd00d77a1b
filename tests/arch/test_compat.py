"""`alloy check` and the check every merge runs: config fields, tensors, tokenizers, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from checkpoints import write_tokenizer
from click.testing import CliRunner
from tiny import tiny_tensors, write_tiny

import alloy
from alloy.analysis.check import check, check_config
from alloy.arch.compat import architecture_fields, compare_configs
from alloy.arch.tokenizer import tokenizer_info, vocab_hash
from alloy.cli import main


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def _row(text: str, key: str) -> list[str]:
    """The cells of the table row whose key is ``key`` (cells are separated by 2+ spaces)."""
    for line in text.splitlines():
        cells = [c for c in line.strip().split("  ") if c.strip()]
        if len(cells) > 1 and cells[1].strip() == key:
            return [c.strip() for c in cells]
    raise AssertionError(f"no row {key!r} in:\n{text}")


def test_identical_models_are_mergeable_with_equal_hashes(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        write_tiny(tmp_path / name, seed)
    code, out = _run("check", *(str(tmp_path / n) for n in "abc"))
    assert code == 0, out
    assert "agree on every compared field" in out and out.rstrip().endswith("mergeable.")
    report = check([str(tmp_path / n) for n in "abc"])
    assert len(set(report.architecture_hashes)) == 1 and report.mergeable()


def test_architecture_field_is_a_crime_that_allow_crimes_lets_through(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0, config={"rope_theta": 10000.0, "hidden_act": "silu"})
    write_tiny(tmp_path / "b", 1, config={"rope_theta": 500000.0, "hidden_act": "silu"})
    code, out = _run("check", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 1
    assert _row(out, "rope_theta") == ["config", "rope_theta", "10000.0", "500000.0", "crime"]
    assert "hidden_act" not in out  # equal fields are not listed
    assert "--allow-crimes merges them anyway" in out
    code2, out2 = _run("check", "--allow-crimes", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code2 == 0 and "mergeable with --allow-crimes (1 crime)" in out2
    report = check([str(tmp_path / "a"), str(tmp_path / "b")])
    assert report.architecture_hashes[0] != report.architecture_hashes[1]


def test_aliases_and_implicit_defaults() -> None:
    gpt2 = architecture_fields({"model_type": "gpt2", "n_embd": 32, "n_head": 4, "n_layer": 2})
    assert gpt2["hidden_size"] == 32 and gpt2["num_hidden_layers"] == 2
    assert gpt2["head_dim"] == 8 and gpt2["num_key_value_heads"] == 4
    # head_dim written out or implied, KV heads written out or implied: no difference
    explicit = {
        "hidden_size": 32,
        "num_attention_heads": 4,
        "head_dim": 8,
        "num_key_value_heads": 4,
    }
    implicit = {"hidden_size": 32, "num_attention_heads": 4}
    assert compare_configs([explicit, implicit], ["x", "y"]) == []
    # a field absent from one config is a note, not a crime (transformers' default applies)
    diffs = compare_configs([{**implicit, "attention_bias": False}, implicit], ["x", "y"])
    assert [(d.key, d.level, d.values) for d in diffs] == [
        ("attention_bias", "note", ("false", "absent"))
    ]
    # nested sub-configs are compared field by field
    diffs = compare_configs(
        [{"text_config": {"hidden_size": 32}}, {"text_config": {"hidden_size": 64}}], ["x", "y"]
    )
    assert [(d.key, d.level) for d in diffs] == [("text_config.hidden_size", "crime")]


def test_layer_counts_block_whole_model_merges_but_not_slices(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0, layers=3)
    write_tiny(tmp_path / "b", 1, layers=4)
    code, out = _run("check", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 1
    assert _row(out, "model.layers") == ["layers", "model.layers", "3", "4", "blocks"]
    assert "use `slices:`" in out
    # tensors of layer 3 are summarized by the layer row, not listed one by one
    assert "model.layers.3." not in out
    franken = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(tmp_path / "a"), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(tmp_path / "b"), "layer_range": [1, 4]}]},
        ],
    }
    cfg = tmp_path / "franken.yml"
    cfg.write_text(yaml.safe_dump(franken))
    code2, out2 = _run("check", str(cfg))
    assert code2 == 0, out2
    assert _row(out2, "num_hidden_layers") == ["config", "num_hidden_layers", "3", "4", "note"]
    res = alloy.merge(cfg, tmp_path / "out")
    assert json.loads((res.out_dir / "config.json").read_text())["num_hidden_layers"] == 5


def test_vocabulary_size_mismatch_blocks_and_says_how_to_resolve(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    t = tiny_tensors(1)
    t["model.embed_tokens.weight"] = torch.randn(12, 4)
    t["lm_head.weight"] = torch.randn(12, 4)
    write_tiny(tmp_path / "b", 1, tensors=t, config={"vocab_size": 12})
    (tmp_path / "a" / "config.json").write_text(
        json.dumps({**json.loads((tmp_path / "a" / "config.json").read_text()), "vocab_size": 10})
    )
    code, out = _run("check", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 1
    assert _row(out, "model.embed_tokens.weight")[2:] == ["[10, 4]", "[12, 4]", "blocks"]
    assert _row(out, "lm_head.weight")[2:] == ["[10, 4]", "[12, 4]", "blocks"]
    assert _row(out, "vocab_size")[2:] == ["10", "12", "crime"]
    assert "resize_token_embeddings" in out and "`tokenizer_source`" in out
    code2, _ = _run("check", "--allow-crimes", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code2 == 1  # shapes differ: no flag merges them


def test_merge_aborts_with_the_check_table_and_writes_nothing(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0, config={"num_attention_heads": 4})
    write_tiny(tmp_path / "b", 1, config={"num_attention_heads": 2})
    cfg = {
        "merge_method": "linear",
        "models": [
            {"model": str(tmp_path / "a"), "parameters": {"weight": 1.0}},
            {"model": str(tmp_path / "b"), "parameters": {"weight": 1.0}},
        ],
    }
    path = tmp_path / "merge.yml"
    path.write_text(yaml.safe_dump(cfg))
    code, table = _run("check", str(path))
    assert code == 1
    with pytest.raises(alloy.IncompatibleModelsError) as e:
        alloy.merge(path, tmp_path / "out")
    assert table.strip() in str(e.value)  # the very same table
    assert not (tmp_path / "out").exists()
    code2, out2 = _run("merge", str(path), str(tmp_path / "out"))
    assert code2 == 1 and "num_attention_heads" in out2 and not (tmp_path / "out").exists()
    res = alloy.merge(path, tmp_path / "out", allow_crimes=True)
    assert any("num_attention_heads (4 / 2)" in n for n in res.notes)


def test_tied_and_untied_models_are_mergeable_with_a_note(tmp_path: Path) -> None:
    write_tiny(tmp_path / "tied", 0, tied=True)
    write_tiny(tmp_path / "untied", 1)
    report = check([str(tmp_path / "tied"), str(tmp_path / "untied")])
    assert report.mergeable()
    assert [(d.key, d.level) for d in report.differences] == [("tie_word_embeddings", "note")]


def _tokenizer_dir(path: Path, *, rename: dict[str, str] | None = None, **config: object) -> Path:
    write_tiny(path, 0)
    write_tokenizer(path, vocab_size=16)
    if rename:
        data = json.loads((path / "tokenizer.json").read_text())
        vocab = data["model"]["vocab"]
        for old, new in rename.items():
            vocab[new] = vocab.pop(old)
        (path / "tokenizer.json").write_text(json.dumps(data, indent=4))
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    tok_cfg.update(config)
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return path


def test_tokenizer_differences_are_notes_with_a_setting(tmp_path: Path) -> None:
    a = _tokenizer_dir(tmp_path / "a", chat_template="{{ messages }}")
    b = _tokenizer_dir(
        tmp_path / "b", rename={"w3": "<|im_start|>"}, eos_token="<|im_end|>", chat_template="x"
    )
    c = _tokenizer_dir(tmp_path / "c", chat_template="{{ messages }}")
    code, out = _run("check", str(a), str(b), str(c))
    assert code == 0, out
    vocab = _row(out, "vocabulary")
    assert vocab[0] == "tokenizer" and vocab[-1] == "note"
    assert vocab[2] == vocab[4] != vocab[3] and vocab[2].startswith("16 tokens")
    assert "id 7: 'w3' vs '<|im_start|>'" in out  # 4 specials, then w0.. : w3 has id 7
    assert "`tokenizer_source`" in out
    assert _row(out, "eos_token")[2:] == ["</s>", "<|im_end|>", "</s>", "note"]
    assert _row(out, "chat_template")[-1] == "note" and "`chat_template:`" in out


def test_vocabulary_hash_ignores_file_layout_and_reads_vocab_files(tmp_path: Path) -> None:
    a = _tokenizer_dir(tmp_path / "a")
    data = json.loads((a / "tokenizer.json").read_text())
    info = tokenizer_info(a)
    assert info is not None and info.vocab_size == 16
    # an independent canonical form: the id -> token pairs in id order
    pairs = sorted((i, t) for t, i in data["model"]["vocab"].items())
    assert info.vocab_hash == vocab_hash(dict(pairs))
    (a / "tokenizer.json").write_text(json.dumps(data, indent=7, sort_keys=True))
    assert tokenizer_info(a).vocab_hash == info.vocab_hash  # type: ignore[union-attr]
    # the same vocabulary as GPT-2's vocab.json, or as BERT's vocab.txt
    g = tmp_path / "g"
    g.mkdir()
    (g / "vocab.json").write_text(json.dumps({t: i for i, t in pairs}))
    assert tokenizer_info(g).vocab_hash == info.vocab_hash  # type: ignore[union-attr]
    w = tmp_path / "w"
    w.mkdir()
    (w / "vocab.txt").write_text("".join(t + "\n" for _, t in pairs))
    assert tokenizer_info(w).vocab_hash == info.vocab_hash  # type: ignore[union-attr]


def test_json_output_and_usage_errors(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1, config={"model_type": "mistral"})
    code, out = _run("check", "--json", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 1
    data = json.loads(out)
    assert data["mergeable"] is False and data["mergeable_with_allow_crimes"] is True
    assert data["differences"] == [
        {
            "kind": "config",
            "key": "model_type",
            "values": ["llama", "mistral"],
            "level": "crime",
            "hint": "different architectures",
        }
    ]
    assert _run("check", str(tmp_path / "a"), str(tmp_path / "nope"))[0] == 2
    assert _run("check", str(tmp_path / "a"))[0] == 2  # one model: nothing to compare
    assert _run("check")[0] == 2  # click usage error
    bad = tmp_path / "bad.yml"
    bad.write_text("merge_method: linear\nmodels:\n  - model: x\n    paramters: {weight: 1}\n")
    assert _run("check", str(bad))[0] == 2


def test_check_config_reports_notes_of_a_mergeable_config(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0, config={"max_position_embeddings": 128})
    write_tiny(tmp_path / "b", 1, config={"max_position_embeddings": 256})
    path = tmp_path / "m.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "merge_method": "linear",
                "models": [
                    {"model": str(tmp_path / "a"), "parameters": {"weight": 1.0}},
                    {"model": str(tmp_path / "b"), "parameters": {"weight": 1.0}},
                ],
            }
        )
    )
    report = check_config(path)
    assert report.mergeable() and [d.key for d in report.differences] == ["max_position_embeddings"]


def test_slices_check_each_output_tensor_against_its_inputs(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0, layers=3)
    wide = tiny_tensors(1, layers=3)
    wide["model.layers.2.mlp.up_proj.weight"] = torch.randn(16, 4)  # another MLP width
    write_tiny(tmp_path / "b", 1, tensors=wide)
    cfg = {
        "merge_method": "linear",
        "slices": [
            {
                "sources": [
                    {
                        "model": str(tmp_path / "a"),
                        "layer_range": [0, 1],
                        "parameters": {"weight": 1.0},
                    },
                    {
                        "model": str(tmp_path / "b"),
                        "layer_range": [2, 3],
                        "parameters": {"weight": 1.0},
                    },
                ]
            }
        ],
    }
    path = tmp_path / "slices.yml"
    path.write_text(yaml.safe_dump(cfg))
    code, out = _run("check", str(path))
    assert code == 1
    # output layer 0 takes layer 0 of a and layer 2 of b
    assert _row(out, "model.layers.0.mlp.up_proj.weight")[2:] == ["[8, 4]", "[16, 4]", "blocks"]
    assert "slices[0].sources[1]: model.layers.2.mlp.up_proj.weight" in out
    with pytest.raises(alloy.IncompatibleModelsError) as e:
        alloy.merge(path, tmp_path / "out")
    assert "model.layers.0.mlp.up_proj.weight" in str(e.value) and not (tmp_path / "out").exists()
