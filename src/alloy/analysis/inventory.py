"""The source model inventory: what each input of a merge is, where it came from, what it holds.

For each model: the reference as written and the directory it resolved to (and the hub id and
revision when it came from the Hugging Face cache), the base it declares (``base_model`` of its
model card, ``base_model_name_or_path`` of an adapter config, ``_name_or_path`` of its
config.json), its parameter count and dtypes, its architecture hash (`alloy.arch.compat`:
equal hashes merge tensor by tensor), its tokenizer's vocabulary hash, a content hash of the
weights (sha256 over every tensor's name, dtype, shape and bytes in name order, streamed, so
equal hashes mean equal weights whatever the sharding), and its domain: ``--label``, else the
model card's ``domain``, ``datasets`` or specific ``tags``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from alloy.arch.compat import architecture_hash
from alloy.arch.tokenizer import tokenizer_info
from alloy.config.modelref import ModelRefSyntaxError, parse_model_ref
from alloy.config.schema import ModelRef
from alloy.errors import ConfigError, ConfigIssue, UsageError
from alloy.plan.models import InputModel, close_all, open_all

# Model-card tags that say nothing about the domain.
GENERIC_TAGS = frozenset(
    {
        "merge",
        "mergekit",
        "alloy",
        "transformers",
        "safetensors",
        "pytorch",
        "text-generation",
        "text-generation-inference",
        "conversational",
        "autotrain_compatible",
        "endpoints_compatible",
        "peft",
        "lora",
        "trl",
        "sft",
        "unsloth",
    }
)
HASH_CHUNK_BYTES = 64 * 1024**2


@dataclass
class SourceRecord:
    """One input model. `to_dict` gives the JSON written to ``sources.json``."""

    ref: str
    path: str
    hub_id: str | None
    revision: str | None
    declared_base: str | None
    declared_by: str | None  # where declared_base was found
    model_type: str | None
    architectures: list[str]
    parameters: int
    dtypes: dict[str, int]  # dtype -> number of parameters
    tensors: int
    bytes: int
    layers: int | None
    architecture_hash: str
    vocab_size: int | None
    vocab_hash: str | None
    content_hash: str | None
    domain: str | None
    domain_from: str | None  # "label", "card.domain", "card.datasets", "card.tags"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_card(path: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (README.md), or {} when it has none."""
    card = path / "README.md"
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _listed(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return []


def _domain(card: dict[str, Any], label: str | None) -> tuple[str | None, str | None]:
    if label:
        return label, "label"
    if card.get("domain"):
        return ", ".join(_listed(card["domain"])), "card.domain"
    if _listed(card.get("datasets")):
        return ", ".join(_listed(card["datasets"])), "card.datasets"
    tags = [
        t
        for t in _listed(card.get("tags"))
        if t.lower() not in GENERIC_TAGS and ":" not in t and not t.startswith("base_model")
    ]
    if tags:
        return ", ".join(tags), "card.tags"
    return None, None


def _declared_base(
    path: Path, config: dict[str, Any], card: dict[str, Any]
) -> tuple[str | None, str | None]:
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        try:
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError):
            base = None
        if base:
            return str(base), "adapter_config.base_model_name_or_path"
    if _listed(card.get("base_model")):
        return ", ".join(_listed(card["base_model"])), "card.base_model"
    if config.get("_name_or_path"):
        return str(config["_name_or_path"]), "config._name_or_path"
    return None, None


def content_hash(model: InputModel) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order, read in pieces
    of at most 64 MiB."""
    h = hashlib.sha256()
    for name in sorted(model.arch.names):
        info = model.weights.info(name)
        h.update(f"{name}\0{str(info.dtype).removeprefix('torch.')}\0{list(info.shape)}\0".encode())
        row_bytes = math.prod(info.shape[1:]) * info.dtype.itemsize if info.shape else 0
        if not info.shape or info.nbytes <= HASH_CHUNK_BYTES or row_bytes == 0:
            _update(h, model.weights.get(name))
            continue
        step = max(1, HASH_CHUNK_BYTES // row_bytes)
        for start in range(0, info.shape[0], step):
            _update(h, model.weights.get(name, (start, min(start + step, info.shape[0]))))
    return h.hexdigest()


def _update(h: Any, t: torch.Tensor) -> None:
    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)


def record(
    model: InputModel, *, hash_weights: bool = True, label: str | None = None
) -> SourceRecord:
    """The inventory record of one opened model (headers only unless ``hash_weights``)."""
    names = model.arch.names
    infos = [model.weights.info(n) for n in names]
    dtypes: Counter[str] = Counter()
    for i in infos:
        dtypes[str(i.dtype).removeprefix("torch.")] += i.numel
    card = read_card(model.path)
    base, base_from = _declared_base(model.path, model.config, card)
    domain, domain_from = _domain(card, label)
    tok = tokenizer_info(model.path)
    ref = model.ref
    parts = model.path.parts
    from_hub = "snapshots" in parts and any(p.startswith("models--") for p in parts)
    stack = model.arch.main_stack
    return SourceRecord(
        ref=str(ref),
        path=str(model.path),
        hub_id=ref.path if from_hub else None,
        revision=ref.revision,
        declared_base=base,
        declared_by=base_from,
        model_type=model.config.get("model_type"),
        architectures=_listed(model.config.get("architectures")),
        parameters=sum(i.numel for i in infos),
        dtypes=dict(sorted(dtypes.items())),
        tensors=len(names),
        bytes=sum(i.nbytes for i in infos),
        layers=stack.num_layers if stack is not None else None,
        architecture_hash=architecture_hash(model),
        vocab_size=tok.vocab_size if tok else None,
        vocab_hash=tok.vocab_hash if tok else None,
        content_hash=content_hash(model) if hash_weights else None,
        domain=domain,
        domain_from=domain_from,
    )


def parse_refs(models: Sequence[str | ModelRef]) -> list[ModelRef]:
    refs = []
    for i, m in enumerate(models):
        try:
            refs.append(parse_model_ref(m))
        except ModelRefSyntaxError as e:
            raise ConfigError([ConfigIssue(str(e), f"models[{i}]")]) from None
    return refs


def inventory(
    models: Sequence[str | ModelRef | InputModel],
    *,
    hash_weights: bool = True,
    labels: Sequence[str | None] = (),
) -> list[SourceRecord]:
    """Inventory records for ``models`` (references, paths or opened `InputModel`s), in order.
    ``labels`` give the domain of the first models (None: from the model card)."""
    if len(labels) > len(models):
        raise UsageError(
            f"{len(labels)} labels (`--label`) for {len(models)} models: give one per model"
        )
    refs = parse_refs([m for m in models if not isinstance(m, InputModel)])
    by_ref = open_all(refs)
    try:
        out = []
        it = iter(refs)
        for i, given in enumerate(models):
            model = given if isinstance(given, InputModel) else by_ref[next(it)]
            label = labels[i] if i < len(labels) else None
            out.append(record(model, hash_weights=hash_weights, label=label))
        return out
    finally:
        close_all(by_ref)


def render(records: Sequence[SourceRecord]) -> str:
    """A human-readable inventory, one block per model."""
    lines = []
    for r in records:
        where = r.path if r.hub_id is None else f"{r.hub_id} ({r.path})"
        dtypes = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in r.dtypes.items())
        lines += [
            f"{r.ref}",
            f"  path:          {where}",
            f"  declares base: {r.declared_base or '-'}"
            + (f"  (from {r.declared_by})" if r.declared_by else ""),
            f"  architecture:  {r.model_type or '?'} {', '.join(r.architectures)}, "
            f"{r.layers if r.layers is not None else '?'} layers, hash {r.architecture_hash[:16]}",
            f"  parameters:    {r.parameters:,} in {r.tensors} tensors ({dtypes})",
            "  vocabulary:    "
            + (
                f"{r.vocab_size} tokens, hash {(r.vocab_hash or '?')[:16]}" if r.vocab_hash else "-"
            ),
            f"  content hash:  {r.content_hash or '- (not computed)'}",
            f"  domain:        {r.domain or '-'}"
            + (f"  (from {r.domain_from})" if r.domain else ""),
        ]
    hashes = {r.architecture_hash for r in records}
    if len(records) > 1:
        lines.append(
            "all architecture hashes are equal: the models merge tensor by tensor"
            if len(hashes) == 1
            else f"{len(hashes)} different architecture hashes: run `alloy check` for the differences"
        )
    return "\n".join(lines)


def write_sources(records: Sequence[SourceRecord], path: Path) -> None:
    """``sources.json``: the inventory of a merge's inputs."""
    from alloy._version import __version__

    data = {"alloy_version": __version__, "sources": [r.to_dict() for r in records]}
    path.write_text(json.dumps(data, indent=2) + "\n")
