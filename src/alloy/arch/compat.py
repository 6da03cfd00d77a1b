"""Can these checkpoints be merged? ``config.json`` fields, tensor names and shapes, tokenizers.

Every difference found has a level:

- ``blocks``: the weights do not line up tensor by tensor (a tensor missing from an input,
  shapes that differ, layer counts that differ in a whole-model merge). No flag merges them.
- ``crime``: the tensors line up but the models compute differently (model_type, heads,
  activation, RoPE, ...). ``--allow-crimes`` merges them anyway, tensor by tensor.
- ``note``: worth knowing, does not stop a merge (tokenizers, tied heads, context length, ...).

`alloy check` prints the report; the planner runs the same check before every merge and raises
`IncompatibleModelsError` carrying it, so an incompatible merge stops before writing anything.
The field lists live in ``compat.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from alloy.arch.differences import LEVELS, CompatReport, Difference, Level, short_labels
from alloy.arch.infer import ArchInfo, is_embedding, is_output_embedding, split_layer_name
from alloy.arch.tokenizer import TokenizerInfo, files_digest, first_differences, tokenizer_info
from alloy.io.sources import TensorInfo

VOCAB_HINT = (
    "the vocabularies differ in size, so the embedding rows cannot be merged one to one: set "
    "`tokenizer_source: union` to align every model's rows to the union of the vocabularies "
    "(docs/tokenizers.md), or resize the smaller model's embeddings to the larger tokenizer "
    "first (transformers: model.resize_token_embeddings(len(tokenizer)), then save_pretrained) "
    "and merge with `tokenizer_source` set to the model whose tokenizer has every token"
)


class WeightsLike(Protocol):
    def info(self, name: str) -> TensorInfo: ...


class CheckedModel(Protocol):
    """What the check needs of a model (`alloy.plan.models.InputModel` is one)."""

    path: Path
    config: dict[str, Any]
    arch: ArchInfo

    @property
    def weights(self) -> WeightsLike: ...


@dataclass(frozen=True)
class _Fields:
    architecture: frozenset[str]
    notes: frozenset[str]
    layer_count: str
    aliases: dict[str, str]
    nested: tuple[str, ...]


@cache
def _fields() -> _Fields:
    data = json.loads(resources.files("alloy.arch").joinpath("compat.json").read_text())
    return _Fields(
        frozenset(data["architecture"]),
        frozenset(data["notes"]),
        data["layer_count"],
        dict(data["aliases"]),
        tuple(data["nested"]),
    )


def _render_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


# ---------------------------------------------------------------- config.json


def architecture_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The compared fields of a config under their canonical names (``n_embd`` ->
    ``hidden_size``), nested sub-configs as ``text_config.hidden_size``; implicit defaults
    filled in (``head_dim = hidden_size / num_attention_heads``, KV heads = heads); None
    values dropped."""
    f = _fields()
    out: dict[str, Any] = {}

    def collect(cfg: dict[str, Any], prefix: str) -> None:
        found: dict[str, Any] = {}
        for k, v in cfg.items():  # aliases first, so a canonical spelling wins
            if k in f.aliases and v is not None:
                found.setdefault(f.aliases[k], v)
        for k, v in cfg.items():
            if (k in f.architecture or k in f.notes) and v is not None:
                found[k] = v
        hidden, heads = found.get("hidden_size"), found.get("num_attention_heads")
        if "head_dim" not in found and isinstance(hidden, int) and isinstance(heads, int) and heads:
            found["head_dim"] = hidden // heads
        if "num_key_value_heads" not in found and heads is not None:
            found["num_key_value_heads"] = heads
        out.update({prefix + k: v for k, v in found.items()})

    collect(config, "")
    for nested in f.nested:
        if isinstance(config.get(nested), dict):
            collect(config[nested], nested + ".")
    return out


def _config_hint(key: str, whole_model: bool) -> str:
    name = key.rsplit(".", 1)[-1]
    if name in ("model_type", "architectures"):
        return "different architectures"
    if name == _fields().layer_count:
        return "use `slices:` with layer ranges of equal length" if whole_model else "slices differ"
    if name == "vocab_size":
        return VOCAB_HINT
    if name == "tie_word_embeddings":
        return "a tied model's input embedding stands in for its output head"
    if name == "max_position_embeddings":
        return "the context lengths differ; the merged model takes the config of the base (or first) model"
    return ""


def compare_configs(
    configs: Sequence[dict[str, Any]], labels: Sequence[str], *, whole_model: bool = True
) -> list[Difference]:
    """Differences among the architecture fields of ``configs`` (one per label)."""
    f = _fields()
    have = [bool(c) for c in configs]
    out: list[Difference] = []
    if not all(have) and any(have):
        out.append(
            Difference(
                "config",
                "config.json",
                tuple("found" if h else "missing" for h in have),
                "note",
                "architecture fields are compared only among the models that have a config.json",
            )
        )
    canon = [architecture_fields(c) if h else None for c, h in zip(configs, have)]
    keys: dict[str, None] = {}
    for c in canon:
        keys.update(dict.fromkeys(c or {}))
    for key in keys:
        present = [c[key] for c in canon if c is not None and key in c]
        values = tuple(
            "" if c is None else (_render_value(c[key]) if key in c else "absent") for c in canon
        )
        if all(p == present[0] for p in present) and len(present) == sum(have):
            continue
        name = key.rsplit(".", 1)[-1]
        level: Level = "crime" if name in f.architecture else "note"
        hint = _config_hint(key, whole_model)
        if name == f.layer_count and not whole_model:
            level = "note"
        if all(p == present[0] for p in present):  # absent from some configs only
            level = "note"
            hint = "absent from some configs (transformers uses its default there)"
        out.append(Difference("config", key, values, level, hint))
    return out


# ---------------------------------------------------------------- tensors


def resolve_tensor(model: CheckedModel, name: str) -> str | None:
    """The name under which ``model`` stores tensor ``name`` (a tied model's input embedding
    stands in for its head), or None if it has none."""
    if name in model.arch.name_set:
        return name
    if is_output_embedding(name) and model.arch.tied():
        return model.arch.input_embedding()
    return None


def tensor_info(model: CheckedModel, name: str) -> TensorInfo | None:
    actual = resolve_tensor(model, name)
    return model.weights.info(actual) if actual is not None else None


def tensor_difference(
    name: str,
    entries: Sequence[tuple[str, TensorInfo | None]],
    labels: Sequence[str],
    hint: str = "",
) -> Difference | None:
    """A blocking difference when some entry (model label, info or None if missing) lacks the
    tensor or has another shape; the values are placed in the columns of ``labels``."""
    infos = [i for _, i in entries]
    if all(i is not None for i in infos) and len({i.shape for i in infos if i}) <= 1:
        return None
    cells: dict[str, list[str]] = {}
    for label, info in entries:
        text = "missing" if info is None else str(list(info.shape))
        if text not in cells.setdefault(label, []):
            cells[label].append(text)
    values = tuple(" / ".join(cells.get(label, [])) for label in labels)
    if any(i is None for i in infos):
        have = [lab for lab, i in entries if i is not None]
        lack = [lab for lab, i in entries if i is None]
        note = f"in {', '.join(short_labels(have)) or 'none'}, missing from {', '.join(short_labels(lack))}"
        hint = f"{note}: the models do not share one architecture" + (f" ({hint})" if hint else "")
    elif is_embedding(name):
        hint = VOCAB_HINT + (f" ({hint})" if hint else "")
    return Difference("tensor", name, values, "blocks", hint)


def compare_tensors(models: Sequence[CheckedModel], labels: Sequence[str]) -> list[Difference]:
    """Whole-model comparison: layer counts per stack, then every tensor's presence and shape.
    Tensors of layers beyond the smallest count are summarized by the layer-count row."""
    out: list[Difference] = []
    stacks: dict[str, list[int]] = {}
    for i, m in enumerate(models):
        for s in m.arch.stacks.values():
            stacks.setdefault(s.name, [0] * len(models))[i] = s.num_layers
    common: dict[str, int] = {}
    for name, counts in stacks.items():
        if len(set(counts)) > 1:
            common[name] = min(counts)
            out.append(
                Difference(
                    "layers",
                    name,
                    tuple(str(c) for c in counts),
                    "blocks",
                    "the layer counts differ: use `slices:` with layer ranges of equal length",
                )
            )
    names: dict[str, None] = {}
    for m in models:
        names.update(dict.fromkeys(m.arch.names))
    for name in names:
        split = split_layer_name(name)
        if split is not None and split[0] in common and split[1] >= common[split[0]]:
            continue
        entries = [(label, tensor_info(m, name)) for label, m in zip(labels, models)]
        d = tensor_difference(name, entries, labels)
        if d is not None:
            out.append(d)
    return out


def architecture_hash(model: CheckedModel) -> str:
    """sha256 of the architecture fields that a difference in would be a crime, and of the
    sorted tensor names and shapes: equal hashes mean the checkpoints merge tensor by tensor."""
    f = _fields()
    fields = {
        k: v
        for k, v in architecture_fields(model.config).items()
        if k.rsplit(".", 1)[-1] in f.architecture
    }
    tensors = sorted((n, list(model.weights.info(n).shape)) for n in model.arch.names)
    blob = json.dumps({"config": fields, "tensors": tensors}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------- tokenizers


def _vocab_hint(present: Sequence[tuple[str, TokenizerInfo]]) -> str:
    """What differing vocabularies mean for the merge, and the setting that chooses one."""
    if len({i.vocab_size for _, i in present}) > 1:
        return (
            "the tokenizers have different numbers of tokens; where the embeddings differ "
            "too, the merge stops (see the embedding row). Set `tokenizer_source` to the "
            "model whose tokenizer has every token"
        )
    (la, a), (lb, b) = next(
        (p, q) for p, q in itertools.pairwise(present) if p[1].vocab_hash != q[1].vocab_hash
    )
    diffs = first_differences(a.vocab or {}, b.vocab or {}) if a.vocab and b.vocab else []
    where = f" ({la} vs {lb}: {'; '.join(diffs)})" if diffs else ""
    return (
        "same number of tokens but some ids stand for other tokens"
        f"{where}: their embedding rows are averaged across different tokens. Set "
        "`tokenizer_source` to the model whose tokenizer the merged model should carry"
    )


def compare_tokenizers(
    infos: Sequence[TokenizerInfo | None], labels: Sequence[str]
) -> list[Difference]:
    """Vocabulary, special tokens and chat template; all differences are notes (the weights
    decide whether a merge is possible: a vocabulary of another size shows in the embeddings)."""
    if not any(infos):
        return []
    out: list[Difference] = []
    if not all(infos):
        out.append(
            Difference(
                "tokenizer",
                "files",
                tuple("found" if i else "none" for i in infos),
                "note",
                "some models have no tokenizer files, so their vocabularies cannot be compared",
            )
        )
    present = [(label, i) for label, i in zip(labels, infos) if i is not None]

    def values(fn: Any) -> tuple[str, ...]:
        return tuple("" if i is None else fn(i) for i in infos)

    vocabs = {(i.vocab_size, i.vocab_hash) for _, i in present}
    if len(vocabs) > 1:
        out.append(
            Difference(
                "tokenizer",
                "vocabulary",
                values(lambda i: f"{i.vocab_size or '?'} tokens {(i.vocab_hash or '?')[:8]}"),
                "note",
                _vocab_hint(present),
            )
        )
    keys: dict[str, None] = {}
    for _, i in present:
        keys.update(dict.fromkeys(i.special_tokens))
    for key in keys:
        seen = {i.special_tokens.get(key) for _, i in present}
        if len(seen) > 1:
            out.append(
                Difference(
                    "tokenizer",
                    key,
                    values(lambda i, k=key: i.special_tokens.get(k, "absent")),
                    "note",
                    "the merged model carries the special tokens of its tokenizer source",
                )
            )
    if len({i.chat_template_hash for _, i in present}) > 1:
        out.append(
            Difference(
                "tokenizer",
                "chat_template",
                values(lambda i: (i.chat_template_hash or "none")[:8]),
                "note",
                "the chat templates differ: set `chat_template:` in the config to choose one "
                "(a name such as chatml, or auto for the most common)",
            )
        )
    return out


# ---------------------------------------------------------------- the whole check


def check_models(
    models: Sequence[CheckedModel],
    labels: Sequence[str],
    *,
    whole_model: bool = True,
    extra_tokenizers: Sequence[tuple[str, Path]] = (),
) -> CompatReport:
    """Compare ``models`` (one label each). ``whole_model``: every tensor must line up (a
    ``models:`` merge); otherwise (``slices:``) layer counts may differ and the planner checks
    each output tensor with `tensor_difference`. ``extra_tokenizers``: (label, directory) of
    models that only give the tokenizer (``tokenizer_source``); they get a column of their own
    that only the tokenizer rows fill."""
    extra = [lab for lab, _ in extra_tokenizers]
    pad = ("",) * len(extra)
    diffs = [
        Difference(d.kind, d.key, d.values + pad, d.level, d.hint)
        for d in compare_configs([m.config for m in models], labels, whole_model=whole_model)
        + (compare_tensors(models, labels) if whole_model else [])
    ]
    dirs = [m.path for m in models] + [p for _, p in extra_tokenizers]
    if len({files_digest(d) for d in dirs}) > 1:  # identical files: nothing to parse
        diffs += compare_tokenizers([tokenizer_info(d) for d in dirs], [*labels, *extra])
    diffs.sort(key=lambda d: LEVELS.index(d.level))
    hashes: list[str | None] = [architecture_hash(m) for m in models]
    return CompatReport([*labels, *extra], diffs, hashes + [None] * len(extra))
