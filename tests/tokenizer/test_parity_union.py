"""Parity with mergekit 0.1.5 on tokenizers that really differ (`vocab_models.py`): added
tokens, a reordered vocabulary, an extra vocabulary token, tokens only one model has.

Both tools run the same YAML in-process; the outputs must hold the same tokens, the same
``vocab_size``, and every tensor within 1e-4 (float32). mergekit orders the new tokens of
several fine-tunes by iterating a Python ``set`` of model references (its order changes with the
process's hash seed), Alloy by the config's order; so the embedding and head rows are compared
token by token, and the ids themselves where a single fine-tune brings new tokens (then both
orders agree).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from checkpoints import load_state_dict
from vocab_models import VocabModels

pytestmark = pytest.mark.parity

TOL = 1e-4
TEXTS = [
    "the quick brown fox jumps over the lazy zebra",
    "<|im_start|>user a merge of models<|im_end|> <tool> quokka",
    "embeddings line up when the vocabularies agree",
]
TOKEN_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def _mergekit(config: dict[str, Any], out: Path) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(copy_tokenizer=True, quiet=True, device="cpu")
    run_merge(MergeConfiguration.model_validate(config), str(out), options=options)
    return out


def _alloy(config: dict[str, Any], out: Path) -> Path:
    import alloy

    file = out.parent / f"{out.name}.yml"
    file.write_text(yaml.safe_dump(config, sort_keys=False))
    alloy.merge(str(file), out, copy_tokenizer=True)
    return out


def _vocab(path: Path) -> dict[str, int]:
    import transformers

    return dict(transformers.AutoTokenizer.from_pretrained(str(path)).get_vocab())


def _close(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape, name
    scale = float(theirs.abs().max()) or 1.0
    err = float((ours - theirs).abs().max())
    assert err <= TOL * scale, f"{name}: max |alloy - mergekit| = {err:.3g} (scale {scale:.3g})"


def compare(tmp_path: Path, config: dict[str, Any], same_ids: bool) -> dict[str, Any]:
    """Run both tools on ``config`` and compare everything; Alloy's report.json."""
    import transformers

    theirs_dir = _mergekit(config, tmp_path / "mergekit")
    ours_dir = _alloy(config, tmp_path / "alloy")
    v_ours, v_theirs = _vocab(ours_dir), _vocab(theirs_dir)
    assert set(v_ours) == set(v_theirs)
    if same_ids:
        assert v_ours == v_theirs
    tok_ours = transformers.AutoTokenizer.from_pretrained(str(ours_dir))
    tok_theirs = transformers.AutoTokenizer.from_pretrained(str(theirs_dir))
    for text in TEXTS:
        a, b = tok_ours(text)["input_ids"], tok_theirs(text)["input_ids"]
        assert tok_ours.convert_ids_to_tokens(a) == tok_theirs.convert_ids_to_tokens(b)
        if same_ids:
            assert a == b
    cfg_ours = json.loads((ours_dir / "config.json").read_text())
    cfg_theirs = json.loads((theirs_dir / "config.json").read_text())
    assert cfg_ours["vocab_size"] == cfg_theirs["vocab_size"]
    ours, theirs = load_state_dict(ours_dir), load_state_dict(theirs_dir)
    assert set(ours) == set(theirs)
    n = len(v_ours)
    order = torch.tensor([v_theirs[t] for t, _ in sorted(v_ours.items(), key=lambda kv: kv[1])])
    for name, t in theirs.items():
        if name in TOKEN_TENSORS:  # mergekit's rows in Alloy's token order (padding as it is)
            t = torch.cat([t[order], t[n:]])
            assert ours[name].shape[0] == cfg_ours["vocab_size"]
        _close(name, ours[name], t)
    report: dict[str, Any] = json.loads((ours_dir / "report.json").read_text())
    return report


def _ref(m: VocabModels, name: str) -> str:
    return str(getattr(m, name))


def _three(m: VocabModels, method: str) -> dict[str, Any]:
    if method == "linear":
        models = [
            {"model": _ref(m, "base"), "parameters": {"weight": 0.4}},
            {"model": _ref(m, "ft_added"), "parameters": {"weight": 0.3}},
            {"model": _ref(m, "ft_reordered"), "parameters": {"weight": 0.3}},
        ]
    else:
        params = {"weight": 0.5, **({"density": 0.6} if method == "ties" else {})}
        models = [
            {"model": _ref(m, "ft_added"), "parameters": params},
            {"model": _ref(m, "ft_reordered"), "parameters": params},
        ]
    return {
        "merge_method": method,
        "base_model": _ref(m, "base"),
        "models": models,
        "tokenizer": {"source": "union"},
        "dtype": "float32",
    }


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
def test_union_of_three_differing_tokenizers(
    vocab_models: VocabModels, tmp_path: Path, method: str
) -> None:
    report = compare(tmp_path, _three(vocab_models, method), same_ids=False)
    tok = report["tokenizer"]
    # the base's 120 tokens, ft_added's 3 added tokens, ft_reordered's extra vocab token and
    # its added token: every other token is in every model
    assert tok["tokens"] == 125 and tok["added_count"] == 5
    embed = tok["tensors"]["model.embed_tokens.weight"]
    assert embed["from"] == {"all_models": 120, "one_model": 5}
    assert set(embed["named"]["one_model"]) == {
        "<|im_start|>",
        "<|im_end|>",
        "zebra",
        "Ġquokka",
        "<tool>",
    }


def test_union_with_one_new_vocabulary_has_mergekits_ids(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    m = vocab_models
    config = {
        "merge_method": "linear",
        "base_model": _ref(m, "base"),
        "models": [
            {"model": _ref(m, "base"), "parameters": {"weight": 0.5}},
            {"model": _ref(m, "ft_added"), "parameters": {"weight": 0.5}},
        ],
        "tokenizer_source": "union",
        "dtype": "float32",
    }
    report = compare(tmp_path, config, same_ids=True)
    assert report["tokenizer"]["tokens"] == 123


def _shared_token(m: VocabModels) -> str:
    vocabs = [_vocab(p) for p in (m.base, m.ft_added, m.ft_reordered)]
    return next(t for t in sorted(vocabs[0]) if t.startswith("Ġ") and all(t in v for v in vocabs))


def test_listed_tokens_force_zero_model_token_and_padding(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    m = vocab_models
    forced = _shared_token(m)
    config = _three(m, "linear")
    config["tokenizer"] = {
        "source": "union",
        "tokens": {
            "<|im_start|>": {"source": _ref(m, "ft_added")},
            "zebra": {"source": {"kind": "zero"}},
            "<tool>": {
                "source": {
                    "kind": "model_token",
                    "model": _ref(m, "ft_added"),
                    "token": "<|im_end|>",
                }
            },
            forced: {"source": _ref(m, "ft_reordered"), "force": True},
            "<brand_new>": {"source": {"kind": "zero"}},
        },
        "pad_to_multiple_of": 16,
    }
    report = compare(tmp_path, config, same_ids=False)
    tok = report["tokenizer"]
    assert tok["tokens"] == 126 and tok["rows"] == 128 and "<brand_new>" in tok["added"]
    embed = tok["tensors"]["model.embed_tokens.weight"]
    assert embed["padding"] == 2
    assert embed["named"]["forced"] == [forced]
    assert set(embed["named"]["listed"]) == {"<|im_start|>", "zebra", "<tool>", "<brand_new>"}


def test_base_source_aligns_the_fine_tunes_to_the_base_vocabulary(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    config = _three(vocab_models, "linear")
    del config["tokenizer"]
    config["tokenizer_source"] = "base"
    report = compare(tmp_path, config, same_ids=True)
    assert report["tokenizer"]["tokens"] == 120


def test_model_source_takes_that_models_vocabulary(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    config = _three(vocab_models, "task_arithmetic")
    config["tokenizer"] = {"source": _ref(vocab_models, "ft_reordered")}
    report = compare(tmp_path, config, same_ids=True)
    tok = report["tokenizer"]
    assert tok["tokens"] == 122
    # Ġquokka and <tool> are ft_reordered's alone: the other models take its rows
    assert tok["tensors"]["lm_head.weight"]["from"] == {"all_models": 120, "one_model": 2}


@pytest.mark.parametrize(
    "tied", [(True, True, True), (True, False, False)], ids=["all_tied", "tied_base"]
)
def test_union_with_tied_heads(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, tied: tuple[bool, bool, bool]
) -> None:
    """A tied model's input embedding stands in for its head, aligned like the head rows of
    the untied models (all tied: the output stays tied, with no head)."""
    from vocab_models import build_vocab_models

    models = build_vocab_models(tmp_path_factory.mktemp("tied"), tied)
    report = compare(tmp_path, _three(models, "ties"), same_ids=False)
    tensors = report["tokenizer"]["tensors"]
    assert ("lm_head.weight" in tensors) == (not all(tied))


def test_union_over_slices(vocab_models: VocabModels, tmp_path: Path) -> None:
    """A frankenmerge: the embedding comes from the first slice's model, the head from the
    last's; tokens only another model has get zero rows there (no model of that tensor has
    them), as in mergekit."""
    m = vocab_models
    config = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": _ref(m, "ft_added"), "layer_range": [0, 1]}]},
            {"sources": [{"model": _ref(m, "ft_reordered"), "layer_range": [1, 2]}]},
        ],
        "tokenizer_source": "union",
        "dtype": "float32",
    }
    report = compare(tmp_path, config, same_ids=False)
    embed = report["tokenizer"]["tensors"]["model.embed_tokens.weight"]
    assert embed["from"]["zero"] == 2 and set(embed["named"]["zero"]) == {"Ġquokka", "<tool>"}
