"""The ``tokenizer_source:`` key and the ``tokenizer:`` block, read into a `TokenizerSpec`.

mergekit's schema (``mergekit/tokenizer/config.py``): ``tokenizer_source: union | base | MODEL``
(legacy), or ``tokenizer: {source, tokens, pad_to_multiple_of}`` (``source`` defaults to
``union``), not both. A ``tokens:`` entry is ``TOKEN: {source, force}``, where ``source`` is a
model reference, ``{kind: zero}`` or ``{kind: model_token, model, token_id | token}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alloy.config.document import Path_, fmt_path
from alloy.config.schema import (
    ModelRef,
    ModelToken,
    TokenizerSpec,
    TokenSource,
    TokenSpec,
    ZeroToken,
)
from alloy.config.values import Reporter, check_keys, read_model

TOKENIZER_KEYS = ("source", "tokens", "pad_to_multiple_of")
TOKEN_KEYS = ("source", "force")
MODEL_TOKEN_KEYS = ("kind", "model", "token_id", "token")
KINDS = ("zero", "model_token")


def read_tokenizer(doc: Reporter, raw: Mapping[str, Any]) -> TokenizerSpec | None:
    """The tokenizer settings of the config ``raw`` (None when it has neither key)."""
    if "tokenizer_source" in raw and "tokenizer" in raw:
        doc.error(("tokenizer",), "give `tokenizer_source` or `tokenizer`, not both")
    if "tokenizer" not in raw:
        value = raw.get("tokenizer_source")
        source = None if value is None else _source(doc, value, ("tokenizer_source",))
        return None if source is None else TokenizerSpec(source)
    block = raw["tokenizer"]
    if not isinstance(block, dict):
        doc.error(("tokenizer",), "`tokenizer` must be a mapping like `{source: union}`")
        return None
    check_keys(doc, block, TOKENIZER_KEYS, ("tokenizer",), "`tokenizer`")
    source = _source(doc, block.get("source", "union"), ("tokenizer", "source"))
    tokens = _tokens(doc, block.get("tokens"))
    pad = _pad(doc, block.get("pad_to_multiple_of"))
    return None if source is None else TokenizerSpec(source, tokens, pad)


def _source(doc: Reporter, value: Any, path: Path_) -> ModelRef | str | None:
    if value in ("union", "base"):
        return str(value)
    return read_model(doc, value, path)


def _pad(doc: Reporter, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        doc.error(
            ("tokenizer", "pad_to_multiple_of"),
            f"pad_to_multiple_of must be a positive whole number (such as 64), not {value!r}",
        )
        return None
    return value


def _tokens(doc: Reporter, value: Any) -> tuple[TokenSpec, ...]:
    if value is None:
        return ()
    path: Path_ = ("tokenizer", "tokens")
    if not isinstance(value, dict):
        doc.error(path, "`tokenizer.tokens` must map each token to `{source: ..., force: ...}`")
        return ()
    out: list[TokenSpec] = []
    for token, entry in value.items():
        tpath: Path_ = (*path, str(token))
        if not isinstance(token, str) or not token:
            doc.error(tpath, f"a token must be a non-empty string, not {token!r}")
            continue
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            doc.error(tpath, f"token {token!r} needs a mapping like `{{source: MODEL}}`")
            continue
        check_keys(doc, entry, TOKEN_KEYS, tpath, f"the entry of token {token!r}")
        force = entry.get("force", False)
        if not isinstance(force, bool):
            doc.error((*tpath, "force"), f"force must be true or false, not {force!r}")
            force = False
        source = _token_source(doc, entry.get("source"), (*tpath, "source"))
        if not isinstance(source, _Bad):
            out.append(TokenSpec(token, source, force, fmt_path(tpath)))
    return tuple(out)


class _Bad:
    """A token source with an error, already reported."""


_BAD = _Bad()


def _token_source(doc: Reporter, value: Any, path: Path_) -> TokenSource | _Bad:
    if value is None:
        return None
    if not (isinstance(value, dict) and "kind" in value):
        ref = read_model(doc, value, path)
        return _BAD if ref is None else ref
    kind = value["kind"]
    if kind == "zero":
        check_keys(doc, value, ("kind",), path, "a `{kind: zero}` source")
        return ZeroToken()
    if kind != "model_token":
        doc.error((*path, "kind"), f"unknown token source kind {kind!r} (use {' or '.join(KINDS)})")
        return _BAD
    check_keys(doc, value, MODEL_TOKEN_KEYS, path, "a `{kind: model_token}` source")
    model = read_model(doc, value.get("model"), (*path, "model"))
    token_id, token = value.get("token_id"), value.get("token")
    if (token_id is None) == (token is None):
        doc.error(path, "a model_token source needs exactly one of `token_id` and `token`")
        return _BAD
    if token_id is not None and (
        isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0
    ):
        doc.error((*path, "token_id"), f"token_id must be a whole number >= 0, not {token_id!r}")
        return _BAD
    if token is not None and not isinstance(token, str):
        doc.error((*path, "token"), f"token must be a string, not {token!r}")
        return _BAD
    return _BAD if model is None else ModelToken(model, token_id, token)
