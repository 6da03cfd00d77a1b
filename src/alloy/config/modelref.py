"""Parsing model references: ``path[@rev][+lora[@rev]]`` or mergekit's dict form."""

from __future__ import annotations

from typing import Any

from alloy.config.schema import ModelRef
from alloy.errors import ModelRefSyntaxError

__all__ = ["ModelRefSyntaxError", "parse_model_ref"]


def _parse_part(text: str) -> tuple[str, str | None]:
    if text.count("@") > 1:
        raise ModelRefSyntaxError(f"{text!r} has more than one '@revision'")
    path, _, rev = text.partition("@")
    if not path.strip():
        raise ModelRefSyntaxError(f"{text!r} has an empty model path")
    if "@" in text and not rev.strip():
        raise ModelRefSyntaxError(f"{text!r} has an empty revision after '@'")
    return path.strip(), (rev.strip() or None)


MAPPING_KEYS = ("model", "lora")  # mergekit's third key, override_architecture, is refused


def parse_model_ref(value: Any) -> ModelRef:
    """Parse the string or dict form of a model reference."""
    if isinstance(value, ModelRef):
        return value
    if isinstance(value, str):
        if value.count("+") > 1:
            raise ModelRefSyntaxError(f"{value!r} has more than one '+adapter'")
        model_part, plus, lora_part = value.partition("+")
        path, rev = _parse_part(model_part)
        lora = None
        if plus:
            lpath, lrev = _parse_part(lora_part)
            lora = ModelRef(lpath, lrev)
        return ModelRef(path, rev, lora)
    if isinstance(value, dict):
        if "override_architecture" in value:
            raise ModelRefSyntaxError(
                "`override_architecture` is not supported: Alloy reads the architecture from "
                "the model's config.json; remove the key (or fix that config.json)"
            )
        model = value.get("model")
        if isinstance(model, dict):
            base = ModelRef(str(model.get("path", "")), model.get("revision"))
        elif isinstance(model, str):
            base = parse_model_ref(model)
        else:
            raise ModelRefSyntaxError("a model given as a mapping needs `model: {path: ...}`")
        if not base.path:
            raise ModelRefSyntaxError("`model.path` is empty")
        lora_v = value.get("lora")
        lora = None
        if isinstance(lora_v, dict):
            lora = ModelRef(str(lora_v.get("path", "")), lora_v.get("revision"))
        elif isinstance(lora_v, str):
            lora = parse_model_ref(lora_v)
        unknown = [str(k) for k in value if k not in MAPPING_KEYS]
        if unknown:
            raise ModelRefSyntaxError(
                f"unknown key {unknown[0]!r} in a model mapping (valid: {', '.join(MAPPING_KEYS)})"
            )
        return ModelRef(base.path, base.revision, lora or base.lora)
    raise ModelRefSyntaxError(f"expected a model path or mapping, got {type(value).__name__}")
