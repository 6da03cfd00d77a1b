"""The typed merge config: mergekit's `mergekit-yaml` schema, as frozen dataclasses.

`load.py` turns YAML into these objects after validating every key; nothing downstream sees
raw dictionaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

Scalar: TypeAlias = float | int | bool | str


@dataclass(frozen=True)
class Conditional:
    """One entry of a filtered parameter: ``{filter: self_attn, value: 0.5}``."""

    value: Scalar | tuple[Scalar, ...]
    filter: str | None = None


# A parameter setting: a scalar, a gradient (list of numbers), a step list (list of
# non-numbers), or a list of conditionals (first matching filter wins).
ParamSetting: TypeAlias = Scalar | tuple[Scalar, ...] | tuple[Conditional, ...]
ParamMap: TypeAlias = dict[str, ParamSetting]


@dataclass(frozen=True)
class ModelRef:
    """``path_or_repo[@revision][+lora_path_or_repo[@revision]]``."""

    path: str
    revision: str | None = None
    lora: ModelRef | None = None

    def __str__(self) -> str:
        s = self.path + (f"@{self.revision}" if self.revision else "")
        if self.lora is not None:
            s += "+" + str(self.lora)
        return s


@dataclass(frozen=True)
class InputSource:
    """One model feeding a slice (``layer_range`` is half-open; None means all layers)."""

    model: ModelRef
    layer_range: tuple[int, int] | None = None
    parameters: ParamMap = field(default_factory=dict)
    location: str = ""  # where it was written, for messages: "models[1]" or "slices[0].sources[1]"


@dataclass(frozen=True)
class OutputSlice:
    sources: tuple[InputSource, ...]
    base_model: ModelRef | None = None
    parameters: ParamMap = field(default_factory=dict)
    location: str = ""


@dataclass(frozen=True)
class IgnoredKey:
    """A key mergekit ignores (unknown, misplaced, a parameter the method does not use, or the
    first of a key given twice), so Alloy ignores it too and says so (`config/ignored.py`)."""

    path: str  # where it is written: "models[0].paramters"
    line: int | None
    reason: str  # why mergekit does not read it
    near: str | None = None  # the closest valid key, as a location: "parameters.int8_mask"
    holds: tuple[str, ...] = ()  # the names it would have set (itself, its near key, its keys)
    hint: str | None = None  # said instead of the closest key (a key given twice: which is kept)

    def render(self, source: str | None = None) -> str:
        where = f"{source}:{self.line}: " if source and self.line is not None else ""
        hint = self.hint or (
            f"closest valid key: `{self.near}`" if self.near else "no valid key is close"
        )
        return (
            f"{where}`{self.path}` is ignored, as mergekit ignores it: {self.reason}; {hint} "
            "(--strict makes this an error)"
        )


@dataclass(frozen=True)
class ModuleDef:
    """One module of a multi-module model (``modules.<name>``: a text decoder, a vision
    tower, ...), merged with its own ``models:`` or ``slices:`` and parameters."""

    name: str
    models: tuple[InputSource, ...] | None
    slices: tuple[OutputSlice, ...] | None
    parameters: ParamMap  # the top level's, overridden per parameter by the module's own
    location: str  # "modules.vision_tower"


@dataclass(frozen=True)
class ZeroToken:
    """``{kind: zero}``: the token's embedding and head rows are zeros."""


@dataclass(frozen=True)
class ModelToken:
    """``{kind: model_token, model, token_id | token}``: the rows of one token (by id, or by its
    text in that model's own vocabulary) of one model."""

    model: ModelRef
    token_id: int | None = None
    token: str | None = None


# Where a listed token's rows come from: a model (its row of that token), one token of a model,
# zeros, or None (the default rule: the base's row, the one model that has it, or the mean)
TokenSource: TypeAlias = ModelRef | ModelToken | ZeroToken | None


@dataclass(frozen=True)
class TokenSpec:
    """One entry of ``tokenizer.tokens``: ``force`` takes ``source``'s rows even for the
    models that have the token themselves."""

    token: str
    source: TokenSource = None
    force: bool = False
    location: str = ""  # "tokenizer.tokens.<|im_start|>", for messages


@dataclass(frozen=True)
class TokenizerSpec:
    """The ``tokenizer:`` block (``tokenizer_source: X`` is ``{source: X}``): the output
    vocabulary (``union``, ``base`` or a model's) and how the embedding rows are aligned to it."""

    source: ModelRef | str  # "union", "base", or a model
    tokens: tuple[TokenSpec, ...] = ()
    pad_to_multiple_of: int | None = None


@dataclass(frozen=True)
class MergeConfig:
    merge_method: str
    base_model: ModelRef | None
    models: tuple[InputSource, ...] | None
    slices: tuple[OutputSlice, ...] | None
    parameters: ParamMap
    dtype: str | None
    out_dtype: str | None
    tokenizer_source: ModelRef | str | None  # "union", "base", or a model
    chat_template: str | None
    name: str | None
    raw: dict[str, Any]  # the document as written, for the model card and mergekit_config.yml
    source_file: str | None = None
    # the line of every key and item, by location ("models[1].parameters.weight"): problems
    # found after parsing (by the planner) name their line too
    lines: Mapping[str, int] = field(default_factory=dict)
    ignored: tuple[IgnoredKey, ...] = ()  # the keys mergekit ignores, in document order
    # ``modules:`` with more than one module; then ``models``/``slices`` are the first one's
    modules: tuple[ModuleDef, ...] | None = None
    # the whole tokenizer block (`tokenizer_source` is its `source`); None when neither is given
    tokenizer: TokenizerSpec | None = None

    def all_models(self) -> list[ModelRef]:
        """Every model the config references, in order of first appearance (deterministic)."""
        seen: dict[ModelRef, None] = {}
        if self.base_model is not None:
            seen[self.base_model] = None
        sections = [(m.models, m.slices) for m in self.modules or ()]
        for models, slices in [(self.models, self.slices), *sections]:
            for src in models or ():
                seen[src.model] = None
            for sl in slices or ():
                if sl.base_model is not None:
                    seen[sl.base_model] = None
                for src in sl.sources:
                    seen[src.model] = None
        if isinstance(self.tokenizer_source, ModelRef):
            seen[self.tokenizer_source] = None
        return list(seen)
