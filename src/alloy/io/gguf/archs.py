"""Architecture knowledge as data (``archs.json``): GGUF <-> Hugging Face tensor names and config
fields for each supported ``general.architecture``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

_BLOCK = re.compile(r"\{i\}")


@dataclass(frozen=True)
class ArchSpec:
    name: str  # general.architecture
    architecture: str  # the Hugging Face class, config.json "architectures"
    model_type: str
    permute_qk: bool  # llama.cpp permuted the rows of attn_q / attn_k by heads
    norm_offset: float  # llama.cpp stored every "*norm.weight" as w + offset
    tensors: dict[str, str]  # GGUF template -> HF template
    ignored: tuple[str, ...]  # GGUF tensors with no HF counterpart (derived from the config)
    config: dict[str, str]  # metadata key (after "<arch>.") -> config.json field
    fixed: dict[str, Any] = field(default_factory=dict)
    copy: dict[str, str] = field(default_factory=dict)  # config field -> the field it equals

    @cached_property
    def _to_hf(self) -> list[tuple[re.Pattern[str], str]]:
        return _compile(self.tensors.items())

    @cached_property
    def _to_gguf(self) -> list[tuple[re.Pattern[str], str]]:
        return _compile((h, g) for g, h in self.tensors.items())

    def to_hf(self, name: str) -> str | None:
        """The Hugging Face name of GGUF tensor ``name``, or None when the map lacks it."""
        return _translate(self._to_hf, name)

    def to_gguf(self, name: str) -> str | None:
        """The GGUF name of Hugging Face tensor ``name``, or None when the map lacks it."""
        return _translate(self._to_gguf, name)

    def is_norm(self, gguf_name: str) -> bool:
        return gguf_name.endswith("norm.weight")

    def is_qk(self, gguf_name: str) -> str | None:
        """``"q"`` or ``"k"`` for a permuted projection (weight or bias), else None."""
        if not self.permute_qk:
            return None
        m = re.search(r"\.attn_([qk])\.(weight|bias)$", gguf_name)
        return m.group(1) if m else None


def _compile(pairs: Iterable[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
    out = []
    for src, dst in pairs:
        pattern = re.escape(src).replace(r"\{i\}", r"(?P<i>\d+)")
        out.append((re.compile(f"^{pattern}$"), dst))
    return out


def _translate(table: list[tuple[re.Pattern[str], str]], name: str) -> str | None:
    for pattern, dst in table:
        m = pattern.match(name)
        if m:
            return _BLOCK.sub(m.group("i"), dst) if "i" in m.groupdict() else dst
    return None


@cache
def _table() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(__file__).parent / "archs.json").read_text())
    data.pop("_doc", None)
    return data


def known() -> list[str]:
    return sorted(_table())


def spec(arch: str) -> ArchSpec | None:
    raw = _table().get(arch)
    if raw is None:
        return None
    return ArchSpec(
        name=arch,
        architecture=raw["architecture"],
        model_type=raw["model_type"],
        permute_qk=raw["permute_qk"],
        norm_offset=float(raw["norm_offset"]),
        tensors=dict(raw["tensors"]),
        ignored=tuple(raw["ignored"]),
        config=dict(raw["config"]),
        fixed=dict(raw["fixed"]),
        copy=dict(raw.get("copy", {})),
    )


def spec_for_model_type(model_type: str) -> ArchSpec | None:
    """The spec whose Hugging Face ``model_type`` is ``model_type`` (for writing)."""
    for arch, raw in _table().items():
        if model_type in (raw["model_type"], arch, *raw.get("also_written_from", [])):
            return spec(arch)
    return None


def permute_rows(w: Any, heads: int, forward: bool) -> Any:
    """llama.cpp's Q/K row order (``forward``: HF -> GGUF) or its inverse, on a torch tensor
    whose first dimension is ``heads`` heads of rotary pairs."""
    shape = w.shape
    half = shape[0] // heads // 2
    rest = tuple(shape[1:])
    if forward:  # HF: per head, the first halves then the second halves; GGUF: interleaved
        return w.reshape(heads, 2, half, *rest).transpose(1, 2).reshape(shape)
    return w.reshape(heads, half, 2, *rest).transpose(1, 2).reshape(shape)
