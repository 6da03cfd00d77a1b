"""Tokenizer fingerprints, read from a model directory's files as JSON and text.

No tokenizer library is imported: the vocabulary (id -> token) comes from ``tokenizer.json``
(``model.vocab`` of a BPE / WordPiece / WordLevel model, or the ``[token, score]`` list of a
Unigram one, plus ``added_tokens``), else from ``vocab.json`` or ``vocab.txt`` plus
``added_tokens.json``. A SentencePiece ``tokenizer.model`` is a protobuf: its bytes are hashed
as they are. Special tokens come from ``tokenizer_config.json`` and ``special_tokens_map.json``,
the chat template from ``chat_template.jinja``, ``chat_template.json`` or
``tokenizer_config.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloy.errors import CheckpointError

SPECIAL_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
)
FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "added_tokens.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True)
class TokenizerInfo:
    """What identifies a tokenizer: its vocabulary, special tokens and chat template."""

    files: tuple[str, ...]
    vocab_size: int | None  # number of ids (highest id + 1)
    vocab_hash: str | None  # sha256 of the canonical id -> token map (or of tokenizer.model)
    special_tokens: dict[str, str]
    chat_template: str | None
    vocab: dict[int, str] | None = field(default=None, repr=False, compare=False)

    @property
    def chat_template_hash(self) -> str | None:
        if self.chat_template is None:
            return None
        return hashlib.sha256(self.chat_template.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "vocab_size": self.vocab_size,
            "vocab_hash": self.vocab_hash,
            "special_tokens": dict(self.special_tokens),
            "chat_template_hash": self.chat_template_hash,
        }


def _load(path: Path) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"cannot read tokenizer file {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"tokenizer file {path} must hold a JSON object, not {data!r:.40}")
    return data


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    content = value.get("content") if isinstance(value, dict) else None
    return content if isinstance(content, str) else None


def _vocab_from_tokenizer_json(data: dict[str, Any]) -> dict[int, str]:
    model = data.get("model") or {}
    vocab: dict[int, str] = {}
    raw = model.get("vocab")
    if isinstance(raw, dict):  # BPE, WordPiece, WordLevel: token -> id
        vocab = {int(i): str(t) for t, i in raw.items()}
    elif isinstance(raw, list):  # Unigram: [[token, score], ...], id = position
        vocab = {i: str(entry[0]) for i, entry in enumerate(raw)}
    for added in data.get("added_tokens") or ():
        if isinstance(added, dict) and "id" in added and "content" in added:
            vocab[int(added["id"])] = str(added["content"])
    return vocab


def _vocab_from_files(root: Path) -> dict[int, str] | None:
    vocab: dict[int, str] | None = None
    if (root / "vocab.json").is_file():
        raw = _load(root / "vocab.json")
        vocab = {int(i): str(t) for t, i in raw.items()}
    elif (root / "vocab.txt").is_file():
        lines = (root / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab = dict(enumerate(lines))
    if vocab is not None and (root / "added_tokens.json").is_file():
        vocab.update({int(i): str(t) for t, i in _load(root / "added_tokens.json").items()})
    return vocab


def vocab_hash(vocab: dict[int, str]) -> str:
    """sha256 of the id -> token map, in id order (independent of file layout and formatting)."""
    h = hashlib.sha256()
    for i in sorted(vocab):
        h.update(f"{i}\0{vocab[i]}\0".encode())
    return h.hexdigest()


def read_chat_template(root: Path) -> str | None:
    if (root / "chat_template.jinja").is_file():
        try:
            return (root / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {root / 'chat_template.jinja'}: {e}") from e
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (root / name).is_file():
            value = _load(root / name).get("chat_template")
            if isinstance(value, list):  # named templates: [{"name": ..., "template": ...}]
                value = json.dumps(value, sort_keys=True)
            if isinstance(value, str):
                return value
    return None


def _special_tokens(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if not (root / name).is_file():
            continue
        data = _load(root / name)
        for key in SPECIAL_KEYS:
            text = _token_text(data.get(key))
            if text is not None:
                out.setdefault(key, text)
        extra = data.get("additional_special_tokens")
        if isinstance(extra, list) and "additional_special_tokens" not in out:
            texts = [t for t in (_token_text(v) for v in extra) if t is not None]
            out["additional_special_tokens"] = " ".join(texts)
    return out


def files_digest(root: Path) -> str:
    """sha256 over the names and bytes of the tokenizer files in ``root``: equal digests mean
    identical tokenizers (cheap: no parsing)."""
    h = hashlib.sha256()
    for name in FILES:
        if (root / name).is_file():
            h.update(name.encode() + b"\0")
            h.update((root / name).read_bytes())
    return h.hexdigest()


def tokenizer_info(root: Path) -> TokenizerInfo | None:
    """The fingerprint of the tokenizer stored in ``root``, or None if it holds none."""
    files = tuple(f for f in FILES if (root / f).is_file())
    if not files:
        return None
    vocab: dict[int, str] | None = None
    digest: str | None = None
    if (root / "tokenizer.json").is_file():
        vocab = _vocab_from_tokenizer_json(_load(root / "tokenizer.json"))
    else:
        vocab = _vocab_from_files(root)
    if vocab:
        digest = vocab_hash(vocab)
        size: int | None = max(vocab) + 1
    elif (root / "tokenizer.model").is_file():
        digest = hashlib.sha256((root / "tokenizer.model").read_bytes()).hexdigest()
        size = None
    else:
        size = None
    return TokenizerInfo(
        files, size, digest, _special_tokens(root), read_chat_template(root), vocab
    )


def first_differences(a: dict[int, str], b: dict[int, str], limit: int = 3) -> list[str]:
    """The first ids whose tokens differ, as ``id 5: 'x' vs 'y'``."""
    out = []
    for i in sorted(set(a) | set(b)):
        if a.get(i) != b.get(i):
            out.append(f"id {i}: {a.get(i, '-')!r} vs {b.get(i, '-')!r}")
            if len(out) == limit:
                break
    return out
