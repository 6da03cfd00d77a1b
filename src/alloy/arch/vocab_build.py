"""The output tokenizer of a merge that aligns vocabularies, and every input's vocabulary.

mergekit's semantics (``mergekit/tokenizer/build.py``), with transformers (imported here only,
so a merge without ``tokenizer:`` alignment never loads it):

- the base tokenizer (the base model's, else the first model's) is *stripped*: its tokens with
  an id at or beyond the model's vocabulary size (its embedding rows) are removed, which only a
  fast BPE tokenizer allows, with the merges that use or make them (mergekit keeps the merges
  that make them, and the tokenizer then fails to load);
- ``union``: the stripped base, plus every other vocabulary token and added token of the other
  models (in the config's order) that the base lacks, each added to the base tokenizer as an
  added token (vocabulary tokens first, then the added tokens with their own settings);
- ``base``: the stripped base; a model: that model's tokenizer as it is;
- then the tokens the config lists under ``tokenizer.tokens`` that the vocabulary lacks are
  added.

The vocabularies used to align each model's rows are those tokenizers' ``get_vocab()`` (the
base's stripped); a model without tokenizer files is taken to share the base's, as mergekit
does, and a note says so.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloy.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


@dataclass(frozen=True)
class VocabInput:
    """One model of the merge: its label, directory, and the rows its embedding has (ids at or
    beyond are not its tokens)."""

    label: str
    path: Path
    rows: int


@dataclass(frozen=True)
class Vocabularies:
    """The output vocabulary (token -> id), each input's (by label), and the output tokenizer's
    files when they are new (None: the source model's files are the output's as they are)."""

    out: dict[str, int]
    inputs: dict[str, dict[str, int]]
    files: dict[str, bytes] | None
    notes: tuple[str, ...] = ()
    added: tuple[str, ...] = field(default=())  # the tokens the base tokenizer did not have


def has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in TOKENIZER_FILES)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - transformers is a dependency
        raise CheckpointError(
            "aligning vocabularies (`tokenizer:` / `tokenizer_source`) needs transformers: "
            "pip install transformers"
        ) from e
    logging: Any = transformers.logging
    logging.set_verbosity_error()
    return transformers


def load_tokenizer(path: Path, label: str, fast: bool = False) -> Any:
    kwargs = {"use_fast": True} if fast else {}
    try:
        return _transformers().AutoTokenizer.from_pretrained(str(path), **kwargs)
    except Exception as e:  # transformers raises many kinds; say which model
        raise CheckpointError(
            f"{label}: cannot load the tokenizer in {path} ({type(e).__name__}: {e}); a merge "
            "that aligns vocabularies reads every model's tokenizer files"
        ) from e


def stripped(tok: Any, rows: int, label: str) -> tuple[Any, bool]:
    """``tok`` without the tokens whose id is ``rows`` or more (no embedding row holds them),
    and whether there were any."""
    unused = {t for t, i in tok.get_vocab().items() if i >= rows}
    if not unused:
        return tok, False
    if not getattr(tok, "is_fast", False):
        raise CheckpointError(
            f"{label}: its tokenizer has {len(unused)} tokens beyond the embedding's {rows} rows "
            "and is not a fast tokenizer (tokenizer.json), so they cannot be removed; give the "
            "model a tokenizer.json"
        )
    data = json.loads(tok._tokenizer.to_str())
    if data["model"]["type"] != "BPE":
        raise CheckpointError(
            f"{label}: its tokenizer has {len(unused)} tokens beyond the embedding's {rows} rows; "
            f"they can be removed from a BPE tokenizer only, and this one is "
            f"{data['model']['type']}"
        )
    data["added_tokens"] = [a for a in data["added_tokens"] if a["id"] < rows]
    for t in unused:
        data["model"]["vocab"].pop(t, None)

    def keep(merge: Any) -> bool:  # neither its parts nor its result is a removed token
        parts = merge.split(" ") if isinstance(merge, str) else list(merge)
        return not any(p in unused for p in [*parts, "".join(parts)])

    data["model"]["merges"] = [m for m in data["model"]["merges"] if keep(m)]
    from tokenizers import Tokenizer

    tok._tokenizer = Tokenizer.from_str(json.dumps(data))
    return tok, True


def _copy(tok: Any) -> Any:
    """A fresh fast tokenizer equal to ``tok`` (saved and loaded again: ``tok`` stays as it is)."""
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        return _transformers().AutoTokenizer.from_pretrained(d, use_fast=True)


def union(base: Any, tokenizers: Sequence[tuple[Any, int]]) -> tuple[Any, list[str]]:
    """The base tokenizer with every other token of ``tokenizers`` ((tokenizer, rows), the
    base's first) added; and the tokens added."""
    vocab: dict[str, None] = {}
    added: dict[str, Any] = {}
    for tok, rows in tokenizers:
        specials = tok.added_tokens_decoder
        for t, i in tok.get_vocab().items():
            if i < rows:
                vocab.setdefault(t)
        for i, info in specials.items():
            if i < rows:
                added.setdefault(info.content, info)
    out = _copy(base)
    base_vocab = base.get_vocab()
    new = [t for t in vocab if t not in added and t not in base_vocab]
    if new:  # one call per kind: the same ids as one call per token, in the same order
        out.add_tokens(new)
    if added:
        out.add_tokens(list(added.values()))
    return out, [*new, *(t for t in added if t not in base_vocab)]


def build_vocabularies(
    base: VocabInput,
    others: Sequence[VocabInput],
    source: str | VocabInput,
    add_tokens: Sequence[str],
) -> Vocabularies:
    """The output vocabulary for ``source`` ("union", "base", or one model) and every input's
    vocabulary, ``add_tokens`` added to the output."""
    notes: list[str] = []
    base_tok, cut = stripped(
        load_tokenizer(base.path, base.label, fast=True), base.rows, base.label
    )
    toks: dict[str, tuple[Any, int]] = {base.label: (base_tok, base.rows)}
    for m in others:
        if m.label in toks:
            continue
        if not has_tokenizer(m.path):
            notes.append(
                f"{m.label} has no tokenizer files: its vocabulary is taken to be the base's "
                f"({base.label}), as mergekit does"
            )
            continue
        toks[m.label] = (load_tokenizer(m.path, m.label), m.rows)
    new_files = True
    added: list[str] = []
    if source == "union":
        out, added = union(base_tok, list(toks.values()))
    elif source == "base":
        out, new_files = base_tok, cut
    else:
        assert isinstance(source, VocabInput)
        out, new_files = load_tokenizer(source.path, source.label), False
    missing = [t for t in dict.fromkeys(add_tokens) if t not in out.get_vocab()]
    if missing:
        out = _copy(out) if not new_files else out
        out.add_tokens(missing)
        new_files = True
    inputs = {label: tok.get_vocab() for label, (tok, _) in toks.items()}
    for m in others:
        inputs.setdefault(m.label, inputs[base.label])
    files = _files(out) if new_files else None
    return Vocabularies(out.get_vocab(), inputs, files, tuple(notes), tuple([*added, *missing]))


def _files(tok: Any) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes for ``tok``, by name."""
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}
