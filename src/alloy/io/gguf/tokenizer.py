"""Tokenizer files from GGUF metadata, and GGUF tokenizer metadata from tokenizer files.

A GGUF byte-level BPE vocabulary (``tokenizer.ggml.model == "gpt2"``) becomes a ``tokenizer.json``
in the ``tokenizers`` library's format (BPE vocab and merges, control tokens as special added
tokens, the pre-tokenizer that ``tokenizer.ggml.pre`` names) and a ``tokenizer_config.json``
with the special tokens and ``tokenizer.chat_template``. Other vocabularies (SentencePiece) are
not rebuilt; the model's weights and config still convert.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alloy.errors import OutputError

# Split regexes of the pre-tokenizers llama.cpp names in tokenizer.ggml.pre (published with
# each model's tokenizer); a name not listed splits like GPT-2 (ByteLevel's own regex).
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLITS = {"llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3, "qwen2": _QWEN2}
DIGIT_SPLIT = {"smollm", "starcoder", "refact"}  # single digits, then GPT-2's split

CONTROL, USER_DEFINED = 3, 4


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": use_regex,
    }


def pre_tokenizer(pre: str | None) -> dict[str, Any]:
    if pre in SPLITS:
        split = {
            "type": "Split",
            "pattern": {"Regex": SPLITS[pre]},
            "behavior": "Isolated",
            "invert": False,
        }
        return {"type": "Sequence", "pretokenizers": [split, _byte_level(False)]}
    if pre in DIGIT_SPLIT:
        digits = {"type": "Digits", "individual_digits": True}
        return {"type": "Sequence", "pretokenizers": [digits, _byte_level(True)]}
    return _byte_level(True)


def pre_name(pre_tok: dict[str, Any] | None) -> str:
    """The ``tokenizer.ggml.pre`` name of a ``tokenizer.json`` pre-tokenizer."""
    parts = (pre_tok or {}).get("pretokenizers") or [pre_tok or {}]
    for p in parts:
        if p.get("type") == "Digits":
            return "smollm"
        regex = (p.get("pattern") or {}).get("Regex")
        for name, split in SPLITS.items():
            if regex == split:
                return name
    return "gpt2"


def _token(meta: dict[str, Any], key: str) -> str | None:
    i = meta.get(f"tokenizer.ggml.{key}")
    tokens = meta["tokenizer.ggml.tokens"]
    return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None


SPECIAL_IDS = (
    ("bos", "bos_token_id"),
    ("eos", "eos_token_id"),
    ("unk", "unknown_token_id"),
    ("pad", "padding_token_id"),
)


def _added_tokens(tokens: list[str], types: list[int]) -> list[dict[str, Any]]:
    """Control tokens as special added tokens, user-defined ones as plain added tokens."""
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    return [
        {"id": i, "content": tok, **flags, "special": kind == CONTROL}
        for i, (tok, kind) in enumerate(zip(tokens, types))
        if kind in (CONTROL, USER_DEFINED)
    ]


def _post_processor(meta: dict[str, Any], add_bos: bool) -> dict[str, Any]:
    if not add_bos:
        return {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": False,
            "use_regex": True,
        }
    bos = _token(meta, "bos_token_id")
    first = {"SpecialToken": {"id": bos, "type_id": 0}}
    return {
        "type": "TemplateProcessing",
        "single": [first, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            first,
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {
            bos: {"id": bos, "ids": [meta["tokenizer.ggml.bos_token_id"]], "tokens": [bos]}
        },
    }


def _bpe_model(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,
        "vocab": {tok: i for i, tok in enumerate(meta["tokenizer.ggml.tokens"])},
        "merges": list(meta["tokenizer.ggml.merges"]),
    }


def _tokenizer_config(meta: dict[str, Any], add_bos: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
    }
    for field, key in SPECIAL_IDS:
        tok = _token(meta, key)
        if tok is not None:
            config[f"{field}_token"] = tok
    ctx = meta.get(f"{meta.get('general.architecture')}.context_length")
    if isinstance(ctx, int):
        config["model_max_length"] = ctx
    if isinstance(meta.get("tokenizer.chat_template"), str):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config


def tokenizer_files(meta: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """``{file name: JSON}`` for the tokenizer of GGUF metadata ``meta``, or None when it is
    not a byte-level BPE vocabulary with merges."""
    if meta.get("tokenizer.ggml.model") != "gpt2" or not meta.get("tokenizer.ggml.merges"):
        return None
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    add_bos = add_bos and _token(meta, "bos_token_id") is not None
    byte_level = {"add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(tokens, types),
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer(meta.get("tokenizer.ggml.pre")),
        "post_processor": _post_processor(meta, add_bos),
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": _bpe_model(meta),
    }
    return {"tokenizer.json": tokenizer, "tokenizer_config.json": _tokenizer_config(meta, add_bos)}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot read {path}: {e}") from e
    return data if isinstance(data, dict) else {}


def _chat_template(model_dir: Path, tok_cfg: dict[str, Any]) -> str | None:
    if (model_dir / "chat_template.jinja").is_file():
        return (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    template = tok_cfg.get("chat_template")
    return template if isinstance(template, str) else None


def tokenizer_metadata(model_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """``tokenizer.*`` GGUF metadata from ``model_dir``'s ``tokenizer.json`` (byte-level BPE);
    empty when there is none of that kind (the GGUF then carries weights and config only)."""
    tj = model_dir / "tokenizer.json"
    if not tj.is_file():
        return {}
    tok = _read(tj)
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(tok.get("pre_tokenizer")):
        return {}
    tok_cfg = (
        _read(model_dir / "tokenizer_config.json")
        if (model_dir / "tokenizer_config.json").is_file()
        else {}
    )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["content"]: a for a in tok.get("added_tokens", [])}
    for content, a in added.items():
        vocab.setdefault(content, a["id"])
    size = max(int(config.get("vocab_size") or 0), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [USER_DEFINED] * size  # padding rows of the embedding
    for content, i in vocab.items():
        tokens[i] = content
        a = added.get(content)
        types[i] = 1 if a is None else (CONTROL if a.get("special") else USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre_name(tok.get("pre_tokenizer")),
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.add_bos_token": bool(tok_cfg.get("add_bos_token", False)),
        "tokenizer.ggml.add_eos_token": bool(tok_cfg.get("add_eos_token", False)),
    }
    for field, key in SPECIAL_IDS:
        name = tok_cfg.get(f"{field}_token")
        name = name.get("content") if isinstance(name, dict) else name
        if isinstance(name, str) and name in vocab:
            meta[f"tokenizer.ggml.{key}"] = vocab[name]
        elif isinstance(config.get(f"{field}_token_id"), int):
            meta[f"tokenizer.ggml.{key}"] = config[f"{field}_token_id"]
    template = _chat_template(model_dir, tok_cfg)
    if template is not None:
        meta["tokenizer.chat_template"] = template
    return meta
