"""Load and validate a merge config. Every problem is collected and reported at once.

Each problem names the key, its line in the YAML file and, for unknown keys, the closest valid
key. Parameter names are checked against the chosen method's schema, and a global parameter
set per model (which mergekit silently ignores) is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from alloy.config.document import Doc as _Doc
from alloy.config.document import Path_, read_config_text
from alloy.config.document import fmt_path as _fmt_path
from alloy.config.modelref import ModelRefSyntaxError, parse_model_ref
from alloy.config.schema import (
    Conditional,
    InputSource,
    MergeConfig,
    ModelRef,
    OutputSlice,
    ParamMap,
    ParamSetting,
    canonical_dtype,
)
from alloy.errors import ConfigError, ConfigIssue, UnknownMethodError, closest

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
TOKENIZER_KEYS = ("source", "tokens", "pad_to_multiple_of")


def _check_keys(doc: _Doc, value: Mapping[str, Any], allowed: tuple[str, ...], path: Path_) -> None:
    for key in value:
        if key not in allowed:
            near = closest(str(key), allowed)
            hint = f"; did you mean {near!r}?" if near else ""
            doc.error(
                (*path, str(key)),
                f"unknown key {key!r}{hint} (valid here: {', '.join(allowed)})",
            )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _param_setting(doc: _Doc, value: Any, path: Path_) -> ParamSetting | None:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        # A single {filter, value} mapping: mergekit accepts it in the schema and then crashes;
        # Alloy reads it as a one-entry list.
        value = [value]
    if isinstance(value, list):
        if not value:
            doc.error(path, "an empty list is not a parameter value")
            return None
        if all(isinstance(v, dict) for v in value):
            conds: list[Conditional] = []
            for i, item in enumerate(value):
                ipath = (*path, i)
                _check_keys(doc, item, ("filter", "value"), ipath)
                if "value" not in item:
                    doc.error(ipath, "a filtered parameter needs a `value`")
                    continue
                inner = item["value"]
                if isinstance(inner, list):
                    if not inner or isinstance(inner[0], (dict, list)):
                        doc.error((*ipath, "value"), "must be a scalar or a list of numbers")
                        continue
                    inner = tuple(inner)
                elif not isinstance(inner, (bool, int, float, str)):
                    doc.error((*ipath, "value"), "must be a scalar or a list of numbers")
                    continue
                flt = item.get("filter")
                if flt is not None and not isinstance(flt, str):
                    flt = str(flt)
                conds.append(Conditional(value=inner, filter=flt))
            return tuple(conds)
        if any(isinstance(v, (dict, list)) for v in value):
            doc.error(
                path,
                "a list must hold either numbers (a gradient) or {filter, value} entries, "
                "not a mix",
            )
            return None
        return tuple(value)
    doc.error(path, f"unsupported parameter value of type {type(value).__name__}")
    return None


def _params(
    doc: _Doc,
    value: Any,
    path: Path_,
    *,
    allowed: tuple[str, ...] | None,
    globals_: tuple[str, ...],
    method: str,
    per_model: bool,
) -> ParamMap:
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.error(path, "`parameters` must be a mapping of parameter names to values")
        return {}
    out: ParamMap = {}
    for key, v in value.items():
        kpath = (*path, str(key))
        if allowed is not None and key not in allowed:
            near = closest(str(key), allowed)
            hint = f"; did you mean {near!r}?" if near else ""
            doc.error(
                kpath,
                f"{method} has no parameter {key!r}{hint} "
                f"(its parameters: {', '.join(allowed) or 'none'})",
            )
            continue
        if per_model and key in globals_:
            doc.error(
                kpath,
                f"{key!r} is one value per tensor for {method}: set it under the top-level or "
                "slice `parameters`, not per model (mergekit silently ignores it there)",
            )
            continue
        setting = _param_setting(doc, v, kpath)
        if setting is not None:
            out[str(key)] = setting
    return out


def _model(doc: _Doc, value: Any, path: Path_) -> ModelRef | None:
    if value is None or value == "":
        doc.error(path, "a model reference is required here")
        return None
    try:
        return parse_model_ref(value)
    except ModelRefSyntaxError as e:
        doc.error(path, str(e))
        return None


def _layer_range(doc: _Doc, value: Any, path: Path_) -> tuple[int, int] | None:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        doc.error(path, "layer_range must be two integers [start, end) (end excluded)")
        return None
    start, end = value
    if start < 0 or end <= start:
        doc.error(
            path,
            f"layer_range [{start}, {end}] is empty or negative: ranges are half-open "
            f"[start, end), so [{start}, {start + 1}] is the single layer {start}",
        )
        return None
    return (start, end)


def _method_param_names(method: str, n_models: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(all parameter names, global-only names) accepted for ``method`` in this config."""
    from alloy.methods.registry import get_method

    specs = [get_method(method)]
    if method == "slerp" and n_models > 2:
        # slerp over more than two models falls back to ties or multislerp (see the planner)
        specs += [get_method("ties"), get_method("multislerp")]
    per_model = {n for s in specs for n in s.model_param_names()}
    names = [n for s in specs for n in (*s.param_names(), *s.model_param_names())]
    globals_ = [n for s in specs for n in s.param_names() if n not in per_model]
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(globals_))


def parse_config(data: Any, *, source: str | None = None, text: str | None = None) -> MergeConfig:
    """Validate a config given as YAML text or as an already-parsed mapping."""
    if text is None:
        text = yaml.safe_dump(data, sort_keys=False)
    doc = _Doc(text, source)
    raw = doc.data
    if not isinstance(raw, dict):
        raise ConfigError(
            [ConfigIssue("the config must be a YAML mapping with `merge_method`", "", 1)],
            source,
        )
    _check_keys(doc, raw, TOP_KEYS, ())

    method = raw.get("merge_method")
    n_models = 0
    allowed: tuple[str, ...] | None = None
    globals_: tuple[str, ...] = ()
    if not isinstance(method, str) or not method:
        doc.error(("merge_method",), "`merge_method` is required (see `alloy methods`)")
        method = ""
    else:
        # only a count for the parameter check: malformed lists are reported below
        raw_models, raw_slices = raw.get("models"), raw.get("slices")
        n_models = max(
            [len(raw_models) if isinstance(raw_models, list) else 0]
            + [
                len(s["sources"])
                for s in (raw_slices if isinstance(raw_slices, list) else [])
                if isinstance(s, dict) and isinstance(s.get("sources"), list)
            ]
        )
        try:
            allowed, globals_ = _method_param_names(method, n_models)
        except UnknownMethodError as e:
            doc.error(("merge_method",), str(e))

    def params(value: Any, path: Path_, per_model: bool) -> ParamMap:
        return _params(
            doc,
            value,
            path,
            allowed=allowed,
            globals_=globals_,
            method=method,
            per_model=per_model,
        )

    has_models, has_slices = raw.get("models") is not None, raw.get("slices") is not None
    if "modules" in raw:
        doc.error(
            ("modules",),
            "`modules:` (multi-module models such as vision-language models) is not supported "
            "yet; merge the text model with `models:` or `slices:`",
        )
    if has_models == has_slices:
        doc.error((), "give exactly one of `models:` or `slices:`")

    base = _model(doc, raw["base_model"], ("base_model",)) if "base_model" in raw else None

    models: tuple[InputSource, ...] | None = None
    if has_models:
        items = raw["models"]
        if not isinstance(items, list) or not items:
            doc.error(("models",), "`models` must be a non-empty list of `- model: PATH`")
        else:
            built: list[InputSource] = []
            for i, item in enumerate(items):
                path: Path_ = ("models", i)
                if isinstance(item, str):
                    item = {"model": item}
                if not isinstance(item, dict):
                    doc.error(path, "each entry must be a mapping with `model:`")
                    continue
                _check_keys(doc, item, MODEL_KEYS, path)
                m = _model(doc, item.get("model"), (*path, "model"))
                p = params(item.get("parameters"), (*path, "parameters"), True)
                if m is not None:
                    built.append(InputSource(m, None, p, _fmt_path(path)))
            models = tuple(built)

    slices: tuple[OutputSlice, ...] | None = None
    if has_slices:
        items = raw["slices"]
        if not isinstance(items, list) or not items:
            doc.error(("slices",), "`slices` must be a non-empty list of `- sources: [...]`")
        else:
            built_slices: list[OutputSlice] = []
            for i, item in enumerate(items):
                path = ("slices", i)
                if not isinstance(item, dict):
                    doc.error(path, "each slice must be a mapping with `sources:`")
                    continue
                _check_keys(doc, item, SLICE_KEYS, path)
                srcs = item.get("sources")
                if not isinstance(srcs, list) or not srcs:
                    doc.error((*path, "sources"), "a slice needs a non-empty `sources:` list")
                    continue
                sources: list[InputSource] = []
                for j, s in enumerate(srcs):
                    spath: Path_ = (*path, "sources", j)
                    if not isinstance(s, dict):
                        doc.error(spath, "each source must be a mapping with `model:`")
                        continue
                    _check_keys(doc, s, SOURCE_KEYS, spath)
                    m = _model(doc, s.get("model"), (*spath, "model"))
                    if "layer_range" not in s:
                        doc.error(spath, "a slice source needs `layer_range: [start, end)`")
                        lr = None
                    else:
                        lr = _layer_range(doc, s["layer_range"], (*spath, "layer_range"))
                    p = params(s.get("parameters"), (*spath, "parameters"), True)
                    if m is not None and lr is not None:
                        sources.append(InputSource(m, lr, p, _fmt_path(spath)))
                lengths = {s.layer_range[1] - s.layer_range[0] for s in sources if s.layer_range}
                if len(lengths) > 1:
                    doc.error(
                        (*path, "sources"),
                        "all sources of a slice must span the same number of layers "
                        f"(got {sorted(lengths)})",
                    )
                sbase = (
                    _model(doc, item["base_model"], (*path, "base_model"))
                    if "base_model" in item
                    else None
                )
                sp = params(item.get("parameters"), (*path, "parameters"), False)
                built_slices.append(OutputSlice(tuple(sources), sbase, sp, _fmt_path(path)))
            slices = tuple(built_slices)

    top_params = params(raw.get("parameters"), ("parameters",), False)

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

    tok: ModelRef | str | None = None
    if "tokenizer_source" in raw and "tokenizer" in raw:
        doc.error(("tokenizer",), "give `tokenizer_source` or `tokenizer`, not both")
    tok_value = raw.get("tokenizer_source")
    tok_path: Path_ = ("tokenizer_source",)
    if isinstance(raw.get("tokenizer"), dict):
        _check_keys(doc, raw["tokenizer"], TOKENIZER_KEYS, ("tokenizer",))
        tok_value, tok_path = raw["tokenizer"].get("source", "union"), ("tokenizer", "source")
        for key in ("tokens", "pad_to_multiple_of"):
            if key in raw["tokenizer"]:
                doc.error(
                    ("tokenizer", key),
                    f"`tokenizer.{key}` needs vocabulary alignment, which Alloy does not have "
                    "yet; remove it or merge models that share one vocabulary",
                )
    elif "tokenizer" in raw:
        doc.error(("tokenizer",), "`tokenizer` must be a mapping like `{source: base}`")
    if tok_value is not None:
        if tok_value == "union":
            doc.error(
                tok_path,
                "tokenizer source `union` (vocabulary alignment) is not supported yet; use "
                "`base` or a model whose tokenizer the merged model should carry",
            )
        elif tok_value == "base":
            tok = "base"
        else:
            tok = _model(doc, tok_value, tok_path)

    chat_template = raw.get("chat_template")
    if chat_template is not None and not isinstance(chat_template, str):
        doc.error(("chat_template",), "chat_template must be a name or a Jinja template string")
        chat_template = None
    elif chat_template is not None:
        from alloy.report.chat_templates import template_text

        try:
            template_text(chat_template)
        except ValueError as e:
            doc.error(("chat_template",), str(e))
    name = raw.get("name")

    if method and allowed is not None:
        from alloy.methods.registry import get_method

        spec = get_method(method)
        falls_back = method == "slerp" and n_models > 2  # to multislerp without a base
        if spec.base == "required" and base is None and not falls_back:
            slice_bases = [s.base_model for s in slices or ()]
            if not slice_bases or any(b is None for b in slice_bases):
                doc.error(
                    ("merge_method",),
                    f"{method} needs a base model: add `base_model: PATH` (the model the "
                    "fine-tunes started from)",
                )

    if doc.issues:
        raise ConfigError(doc.issues, source)
    return MergeConfig(
        merge_method=method,
        base_model=base,
        models=models,
        slices=slices,
        parameters=top_params,
        dtype=dtypes["dtype"],
        out_dtype=dtypes["out_dtype"],
        tokenizer_source=tok,
        chat_template=chat_template,
        name=str(name) if name is not None else None,
        raw=raw,
        source_file=source,
    )


def load_config(config: str | Path | Mapping[str, Any]) -> MergeConfig:
    """Load a config from a YAML file path, or validate an in-memory mapping."""
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    path = Path(config)
    return parse_config(None, source=str(path), text=read_config_text(path))
