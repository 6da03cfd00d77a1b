"""The modules of multi-module architectures (``modules:`` in a merge config): which tensors
belong to which module, by name prefix, with mergekit's module names (its architecture files
``qwen2_vl.json``, ``qwen2_5_vl.json``, ``llava``-style ``text_decoder``/``vision_tower``/
``multi_modal_projector``). The longest matching prefix wins (``visual.merger.`` is the
projector, the rest of ``visual.`` the vision tower). Both the names checkpoints store and the
ones transformers 5 writes (``model.language_model.``, ``model.visual.``) are listed.
"""

from __future__ import annotations

from collections.abc import Iterable

_QWEN_VL = {
    "text_decoder": ("model.", "lm_head.", "model.language_model."),
    "vision_tower": ("visual.", "model.visual."),
    "multi_modal_projector": ("visual.merger.", "model.visual.merger."),
}
_LLAVA = {
    "text_decoder": ("language_model.", "model.language_model.", "lm_head."),
    "vision_tower": ("vision_tower.", "model.vision_tower."),
    "multi_modal_projector": ("multi_modal_projector.", "model.multi_modal_projector."),
}
MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    "llava": _LLAVA,
    "mistral3": _LLAVA,
}


def module_names(model_type: str) -> tuple[str, ...] | None:
    """The modules of ``model_type``, or None for an architecture Alloy knows no modules of."""
    table = MODULES.get(model_type)
    return tuple(table) if table else None


def module_of(model_type: str, tensor: str) -> str | None:
    """The module ``tensor`` belongs to (None: no module's prefix matches)."""
    best: tuple[int, str] | None = None
    for module, prefixes in MODULES.get(model_type, {}).items():
        for p in prefixes:
            if tensor.startswith(p) and (best is None or len(p) > best[0]):
                best = (len(p), module)
    return best[1] if best else None


def split_by_module(model_type: str, names: Iterable[str]) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for n in names:
        out.setdefault(module_of(model_type, n), []).append(n)
    return out
