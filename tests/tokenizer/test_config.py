"""`tokenizer_source:` and the `tokenizer:` block, read into `TokenizerSpec` (mergekit's schema)."""

from __future__ import annotations

from typing import Any

import pytest

from alloy.config.load import parse_config
from alloy.config.schema import ModelRef, ModelToken, TokenSpec, ZeroToken
from alloy.errors import ConfigError

LINEAR = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 1}\n"


def _issues(text: str) -> list[tuple[str, str, int | None]]:
    with pytest.raises(ConfigError) as e:
        parse_config(None, source="cfg.yml", text=text)
    return [(i.path, i.message, i.line) for i in e.value.issues]


def test_legacy_union_is_read() -> None:
    cfg = parse_config(None, text=LINEAR + "tokenizer_source: union\n")
    assert cfg.tokenizer_source == "union"
    assert cfg.tokenizer is not None and cfg.tokenizer.source == "union"
    assert cfg.tokenizer.tokens == () and cfg.tokenizer.pad_to_multiple_of is None


def test_legacy_base_and_model() -> None:
    assert parse_config(None, text=LINEAR + "tokenizer_source: base\n").tokenizer_source == "base"
    cfg = parse_config(None, text=LINEAR + "tokenizer_source: b\n")
    assert cfg.tokenizer_source == ModelRef("b")


def test_no_tokenizer_key_means_no_alignment() -> None:
    cfg = parse_config(None, text=LINEAR)
    assert cfg.tokenizer is None and cfg.tokenizer_source is None


def test_block_with_every_token_form() -> None:
    text = LINEAR + (
        "tokenizer:\n"
        "  pad_to_multiple_of: 64\n"
        "  tokens:\n"
        "    <|im_start|>:\n"
        "      source: a\n"
        "    <|im_end|>:\n"
        "      source: {kind: zero}\n"
        "      force: true\n"
        "    <tool>:\n"
        "      source: {kind: model_token, model: b, token: '<|endoftext|>'}\n"
        "    <x>:\n"
        "      source: {kind: model_token, model: a, token_id: 7}\n"
        "    <plain>: {}\n"
    )
    cfg = parse_config(None, text=text)
    spec = cfg.tokenizer
    assert spec is not None
    assert spec.source == "union" and cfg.tokenizer_source == "union"  # mergekit's default
    assert spec.pad_to_multiple_of == 64
    loc = "tokenizer.tokens."
    assert spec.tokens == (
        TokenSpec("<|im_start|>", ModelRef("a"), False, loc + "<|im_start|>"),
        TokenSpec("<|im_end|>", ZeroToken(), True, loc + "<|im_end|>"),
        TokenSpec(
            "<tool>", ModelToken(ModelRef("b"), None, "<|endoftext|>"), False, loc + "<tool>"
        ),
        TokenSpec("<x>", ModelToken(ModelRef("a"), 7, None), False, loc + "<x>"),
        TokenSpec("<plain>", None, False, loc + "<plain>"),
    )


def test_block_source_base_or_model() -> None:
    assert (
        parse_config(None, text=LINEAR + "tokenizer: {source: base}\n").tokenizer_source == "base"
    )
    cfg = parse_config(None, text=LINEAR + "tokenizer:\n  source: a\n")
    assert cfg.tokenizer is not None and cfg.tokenizer.source == ModelRef("a")


@pytest.mark.parametrize(
    ("extra", "key", "words", "line"),
    [
        ("tokenizer_source: union\ntokenizer: {source: base}\n", "tokenizer", "not both", 8),
        ("tokenizer: union\n", "tokenizer", "must be a mapping", 7),
        ("tokenizer:\n  pad_to_multiple_of: 0\n", "tokenizer.pad_to_multiple_of", "positive", 8),
        ("tokenizer:\n  pad_to_multiple_of: true\n", "tokenizer.pad_to_multiple_of", "positive", 8),
        ("tokenizer:\n  tokens: [a]\n", "tokenizer.tokens", "must map each token", 8),
        (
            "tokenizer:\n  tokens:\n    <t>: {force: 2}\n",
            "tokenizer.tokens.<t>.force",
            "true or false",
            9,
        ),
        (
            "tokenizer:\n  tokens:\n    <t>: {source: {kind: one}}\n",
            "tokenizer.tokens.<t>.source.kind",
            "unknown token source kind",
            9,
        ),
        (
            "tokenizer:\n  tokens:\n    <t>: {source: {kind: model_token, model: a, token: x, token_id: 3}}\n",
            "tokenizer.tokens.<t>.source",
            "exactly one of `token_id` and `token`",
            9,
        ),
        (
            "tokenizer:\n  tokens:\n    <t>: {source: {kind: model_token, model: a, token_id: -1}}\n",
            "tokenizer.tokens.<t>.source.token_id",
            ">= 0",
            9,
        ),
    ],
)
def test_bad_tokenizer_settings_name_their_key_and_line(
    extra: str, key: str, words: str, line: int
) -> None:
    issues = _issues(LINEAR + extra)
    assert any(k == key and words in msg and ln == line for k, msg, ln in issues), issues


def test_misspelled_key_in_the_block_is_ignored_as_mergekit_does() -> None:
    cfg = parse_config(None, text=LINEAR + "tokenizer:\n  source: union\n  pad_to_multiple: 8\n")
    assert cfg.tokenizer is not None and cfg.tokenizer.pad_to_multiple_of is None
    ignored = [k for k in cfg.ignored if k.path == "tokenizer.pad_to_multiple"]
    assert ignored and ignored[0].near == "pad_to_multiple_of"
    with pytest.raises(ConfigError):
        parse_config(None, text=LINEAR + "tokenizer:\n  pad_to_multiple: 8\n", strict=True)


def test_mapping_input_is_read_the_same() -> None:
    data: dict[str, Any] = {
        "merge_method": "linear",
        "models": [{"model": "a", "parameters": {"weight": 1}}],
        "tokenizer": {"tokens": {"<t>": {"source": "a", "force": True}}},
    }
    spec = parse_config(data).tokenizer
    assert spec is not None and spec.tokens[0].force and spec.tokens[0].source == ModelRef("a")
