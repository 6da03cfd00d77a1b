"""Load and validate a merge config. Every problem is collected and reported at once.

Each problem names the key and its line in the YAML file. Keys mergekit ignores (unknown,
misplaced, parameters the method does not take, a key given twice) are ignored as mergekit
ignores them and listed with their line and the closest valid key (`config/ignored.py`);
``strict`` makes them errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alloy.config.chat_templates import template_text
from alloy.config.document import Doc as _Doc
from alloy.config.document import Path_, read_config_text
from alloy.config.document import fmt_path as _fmt_path
from alloy.config.dtypes import canonical_dtype
from alloy.config.fallback import slerp_fallbacks
from alloy.config.ignored import Reader, explain_missing
from alloy.config.schema import (
    InputSource,
    MergeConfig,
    ModelRef,
    ModuleDef,
    OutputSlice,
    ParamMap,
)
from alloy.config.tokenizer import TOKENIZER_KEYS, read_tokenizer
from alloy.config.values import check_keys, read_layer_range, read_model, read_params
from alloy.errors import ConfigError, ConfigIssue, UnknownMethodError

TOP_KEYS = (
    "merge_method",
    "models",
    "slices",
    "modules",
    "base_model",
    "parameters",
    "dtype",
    "out_dtype",
    "tokenizer_source",
    "tokenizer",
    "chat_template",
    "name",
    "random_seed",  # Alloy's own key (alloy_config.yml records the seed); mergekit ignores it
)
MODEL_KEYS = ("model", "parameters")
SLICE_KEYS = ("sources", "base_model", "parameters", "residual_weight")
SOURCE_KEYS = ("model", "layer_range", "parameters")


def _method_param_names(method: str, n_models: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(all parameter names, global-only names) accepted for ``method`` in this config."""
    from alloy.methods.registry import get_method

    specs = [get_method(method)]
    specs += [get_method(m) for m in slerp_fallbacks(method, n_models) or ()]
    per_model = {n for s in specs for n in s.model_param_names()}
    names = [n for s in specs for n in (*s.param_names(), *s.model_param_names())]
    globals_ = [n for s in specs for n in s.param_names() if n not in per_model]
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(globals_))


@dataclass(frozen=True)
class _Method:
    """The merge method and the parameter names it accepts (None: unknown method, no check)."""

    name: str
    n_models: int
    allowed: tuple[str, ...] | None
    globals_: tuple[str, ...]

    def moved(self, path: Path_) -> dict[str, str]:
        """Where this method's parameters go when written directly in the mapping at ``path``."""
        where = f"{_fmt_path(path)}.parameters" if path else "parameters"
        return {n: f"{where}.{n}" for n in self.allowed or ()}

    def params(self, doc: Reader, value: Any, path: Path_, per_model: bool) -> ParamMap:
        return read_params(
            doc,
            value,
            path,
            allowed=self.allowed,
            globals_=self.globals_,
            method=self.name,
            per_model=per_model,
        )


def _count_models(raw: Mapping[str, Any]) -> int:
    """The most models one tensor merges (only a count for the parameter check: malformed
    lists are reported by `_models` and `_slices`)."""
    raw_models, raw_slices = raw.get("models"), raw.get("slices")
    return max(
        [len(raw_models) if isinstance(raw_models, list) else 0]
        + [
            len(s["sources"])
            for s in (raw_slices if isinstance(raw_slices, list) else [])
            if isinstance(s, dict) and isinstance(s.get("sources"), list)
        ]
    )


def _method_params(
    doc: Reader, raw: Mapping[str, Any], sections: list[tuple[str, Mapping[str, Any]]]
) -> _Method:
    method = raw.get("merge_method")
    if not isinstance(method, str) or not method:
        doc.error(("merge_method",), "`merge_method` is required (see `alloy methods`)")
        return _Method("", 0, None, ())
    n_models = max(_count_models(section) for _, section in sections)
    try:
        allowed, globals_ = _method_param_names(method, n_models)
    except UnknownMethodError as e:
        doc.error(("merge_method",), str(e))
        return _Method(method, n_models, None, ())
    return _Method(method, n_models, allowed, globals_)


def _models(
    doc: Reader, raw: Mapping[str, Any], method: _Method, prefix: Path_ = ()
) -> tuple[InputSource, ...] | None:
    if raw.get("models") is None:
        return None
    items = raw["models"]
    if not isinstance(items, list) or not items:
        doc.error((*prefix, "models"), "`models` must be a non-empty list of `- model: PATH`")
        return None
    built: list[InputSource] = []
    for i, item in enumerate(items):
        path: Path_ = (*prefix, "models", i)
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, dict):
            doc.error(path, "each entry must be a mapping with `model:`")
            continue
        check_keys(doc, item, MODEL_KEYS, path, "a model entry", method.moved(path))
        m = read_model(doc, item.get("model"), (*path, "model"))
        p = method.params(doc, item.get("parameters"), (*path, "parameters"), True)
        if m is not None:
            built.append(InputSource(m, None, p, _fmt_path(path)))
    return tuple(built)


def _slice_source(doc: Reader, s: Any, spath: Path_, method: _Method) -> InputSource | None:
    if not isinstance(s, dict):
        doc.error(spath, "each source must be a mapping with `model:`")
        return None
    check_keys(doc, s, SOURCE_KEYS, spath, "a slice source", method.moved(spath))
    m = read_model(doc, s.get("model"), (*spath, "model"))
    if "layer_range" not in s:
        doc.error(spath, "a slice source needs `layer_range: [start, end)`")
        lr = None
    else:
        lr = read_layer_range(doc, s["layer_range"], (*spath, "layer_range"))
    p = method.params(doc, s.get("parameters"), (*spath, "parameters"), True)
    return InputSource(m, lr, p, _fmt_path(spath)) if m is not None and lr is not None else None


def _slice(doc: Reader, item: Any, path: Path_, method: _Method) -> OutputSlice | None:
    if not isinstance(item, dict):
        doc.error(path, "each slice must be a mapping with `sources:`")
        return None
    check_keys(doc, item, SLICE_KEYS, path, "a slice", method.moved(path))
    srcs = item.get("sources")
    if not isinstance(srcs, list) or not srcs:
        doc.error((*path, "sources"), "a slice needs a non-empty `sources:` list")
        return None
    read = [_slice_source(doc, s, (*path, "sources", j), method) for j, s in enumerate(srcs)]
    sources = [s for s in read if s is not None]
    lengths = {s.layer_range[1] - s.layer_range[0] for s in sources if s.layer_range}
    if len(lengths) > 1:
        doc.error(
            (*path, "sources"),
            f"all sources of a slice must span the same number of layers (got {sorted(lengths)})",
        )
    sbase = (
        read_model(doc, item["base_model"], (*path, "base_model")) if "base_model" in item else None
    )
    sp = method.params(doc, item.get("parameters"), (*path, "parameters"), False)
    return OutputSlice(tuple(sources), sbase, sp, _fmt_path(path))


def _slices(
    doc: Reader, raw: Mapping[str, Any], method: _Method, prefix: Path_ = ()
) -> tuple[OutputSlice, ...] | None:
    if raw.get("slices") is None:
        return None
    items = raw["slices"]
    if not isinstance(items, list) or not items:
        doc.error((*prefix, "slices"), "`slices` must be a non-empty list of `- sources: [...]`")
        return None
    read = [_slice(doc, item, (*prefix, "slices", i), method) for i, item in enumerate(items)]
    return tuple(s for s in read if s is not None)


MODULE_KEYS = ("slices", "models", "parameters")
# mergekit's name for the one module of a single-module architecture (what its model cards
# write when a config is saved with `modules:`).
DEFAULT_MODULE = "default"


def _module_sections(doc: Reader, raw: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The mappings that hold ``models:`` or ``slices:``, by module name: the top level alone
    (name ""), or each module of ``modules:``; ``modules: {default: ...}`` (the one module of a
    text model, as mergekit writes it) is the same merge as its content at the top level."""
    modules = raw.get("modules")
    if modules is None:
        return [("", raw)]
    if raw.get("models") is not None or raw.get("slices") is not None:
        doc.error(("modules",), "give exactly one of `models:`, `slices:` or `modules:`")
        return [("", raw)]
    if not isinstance(modules, dict) or not modules:
        doc.error(
            ("modules",), "`modules` must map module names to `{models: ...}` or `{slices: ...}`"
        )
        return [("", {})]
    sections: list[tuple[str, Mapping[str, Any]]] = []
    for name, section in modules.items():
        if not isinstance(section, dict):
            doc.error(("modules", name), "a module must be a mapping with `slices:` or `models:`")
            continue
        check_keys(doc, section, MODULE_KEYS, ("modules", name), "a module")
        sections.append((str(name), section))
    return sections or [("", {})]


def _prefix(name: str) -> Path_:
    return ("modules", name) if name else ()


def _module(
    doc: Reader, name: str, section: Mapping[str, Any], method: _Method, top: ParamMap
) -> ModuleDef:
    """One section read: its models or slices, and the parameters its tensors see (the
    module's own over the top level's, per parameter, as mergekit looks them up)."""
    prefix = _prefix(name)
    _layout(doc, section, prefix)
    models = _models(doc, section, method, prefix)
    slices = _slices(doc, section, method, prefix)
    if not prefix:  # the top level: its parameters are ``top``, read once
        return ModuleDef(name, models, slices, top, "")
    own = method.params(doc, section.get("parameters"), (*prefix, "parameters"), False)
    return ModuleDef(name, models, slices, {**top, **own}, _fmt_path(prefix))


def _layout(doc: Reader, section: Mapping[str, Any], prefix: Path_) -> None:
    """Exactly one of ``models:`` and ``slices:`` (at the top level or in the module)."""
    if (section.get("models") is not None) == (section.get("slices") is not None):
        doc.error(prefix, "give exactly one of `models:` or `slices:`")


def _dtypes(doc: Reader, raw: Mapping[str, Any]) -> dict[str, str | None]:
    dtypes: dict[str, str | None] = {}
    for key in ("dtype", "out_dtype"):
        v = raw.get(key)
        if v is None:
            dtypes[key] = None
        elif not isinstance(v, str) or canonical_dtype(v) is None:
            doc.error((key,), f"unknown dtype {v!r} (use float32, float16 or bfloat16)")
            dtypes[key] = None
        else:
            dtypes[key] = canonical_dtype(v)
    return dtypes


def _chat_template(doc: Reader, raw: Mapping[str, Any]) -> str | None:
    template = raw.get("chat_template")
    if template is None:
        return None
    if not isinstance(template, str):
        doc.error(("chat_template",), "chat_template must be a name or a Jinja template string")
        return None
    try:
        template_text(template)
    except ValueError as e:
        doc.error(("chat_template",), str(e))
    return template


def _check_base(
    doc: Reader,
    method: _Method,
    base: ModelRef | None,
    slices: tuple[OutputSlice, ...] | None,
) -> None:
    """A method that needs a base has one (top-level, or in every slice)."""
    if not method.name or method.allowed is None:
        return
    from alloy.methods.registry import get_method

    falls_back = slerp_fallbacks(method.name, method.n_models) is not None  # multislerp: no base
    if get_method(method.name).base != "required" or base is not None or falls_back:
        return
    slice_bases = [s.base_model for s in slices or ()]
    if not slice_bases or any(b is None for b in slice_bases):
        doc.error(
            ("merge_method",),
            f"{method.name} needs a base model: add `base_model: PATH` (the model the "
            "fine-tunes started from)",
        )


def parse_config(
    data: Any, *, source: str | None = None, text: str | None = None, strict: bool = False
) -> MergeConfig:
    """Validate a config given as YAML text or as an already-parsed mapping: every section is
    read, and all their problems are raised at once, each with its key and line. Keys mergekit
    ignores are ignored and listed in `MergeConfig.ignored`; ``strict`` makes them errors."""
    if text is None:
        text = yaml.safe_dump(data, sort_keys=False)
    document = _Doc(text, source)
    doc = Reader(document, strict)
    doc.duplicates(text)
    raw = document.data
    if not isinstance(raw, dict):
        raise ConfigError(
            [ConfigIssue("the config must be a YAML mapping with `merge_method`", "", 1)],
            source,
        )
    sections = _module_sections(doc, raw)
    method = _method_params(doc, raw, sections)
    moved = {**method.moved(()), **{k: f"tokenizer.{k}" for k in TOKENIZER_KEYS}}
    check_keys(doc, raw, TOP_KEYS, (), "the top level", moved)
    base = read_model(doc, raw["base_model"], ("base_model",)) if "base_model" in raw else None
    raw_top = method.params(doc, raw.get("parameters"), ("parameters",), False)
    modules = [_module(doc, name, section, method, raw_top) for name, section in sections]
    models, slices, top_params = modules[0].models, modules[0].slices, modules[0].parameters
    dtypes = _dtypes(doc, raw)
    tokenizer = read_tokenizer(doc, raw)
    chat_template = _chat_template(doc, raw)
    _check_base(doc, method, base, slices)
    if method.allowed is not None and not (method.name == "slerp" and method.n_models > 2):
        for module in modules:
            groups: list[tuple[str, ParamMap, tuple[InputSource, ...]]] = []
            groups += [(module.location, {}, module.models)] if module.models else []
            groups += [(s.location, s.parameters, s.sources) for s in module.slices or ()]
            explain_missing(doc, method.name, module.parameters, groups)
    if document.issues:
        raise ConfigError(document.issues, source)
    name = raw.get("name")
    return MergeConfig(
        merge_method=method.name,
        base_model=base,
        models=models,
        slices=slices,
        parameters=top_params,
        dtype=dtypes["dtype"],
        out_dtype=dtypes["out_dtype"],
        tokenizer_source=tokenizer.source if tokenizer is not None else None,
        chat_template=chat_template,
        name=str(name) if name is not None else None,
        raw=raw,
        source_file=source,
        lines={_fmt_path(path): line for path, line in document.lines.items() if path},
        ignored=tuple(sorted(doc.ignored, key=lambda k: (k.line or 0, k.path))),
        modules=None
        if len(sections) == 1 and sections[0][0] in ("", DEFAULT_MODULE)
        else tuple(modules),
        tokenizer=tokenizer,
    )


def load_config(config: str | Path | Mapping[str, Any], *, strict: bool = False) -> MergeConfig:
    """Load a config from a YAML file path, or validate an in-memory mapping (``strict``: keys
    mergekit ignores are errors, see `parse_config`)."""
    if isinstance(config, Mapping):
        return parse_config(dict(config), strict=strict)
    path = Path(config)
    return parse_config(None, source=str(path), text=read_config_text(path), strict=strict)
