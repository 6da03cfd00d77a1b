"""The inputs of `alloy lora merge`: its config (the merge schema) and the adapters it names.

The config is validated as a merge config (``cat`` with task arithmetic's parameters);
parameters resolve per module as in a full merge, the module's weight name
(``<module>.weight``) matching filters and its layer giving the gradient position. Adapters
must share their base (``base_model_name_or_path``, ``revision``); modules of the same name must
have the same shape in every adapter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alloy.arch.infer import split_layer_name
from alloy.config.load import parse_config
from alloy.config.params import layer_position
from alloy.config.schema import MergeConfig, ModelRef
from alloy.errors import (
    ConfigError,
    ConfigIssue,
    IncompatibleModelsError,
    LoraNotSupportedError,
    UsageError,
)
from alloy.io.hub import resolve_model
from alloy.io.lora.adapter import Adapter, LoraModule, is_adapter_dir, open_adapter
from alloy.methods.registry import MethodSpec, get_method

BASE_FIELDS = ("base_model_name_or_path", "revision")
# `base_model` of a config that names none: the schema of the task-arithmetic methods wants one,
# the adapters carry theirs (it is never opened)
ADAPTERS_BASE = "(the adapters' base model)"
METHODS = ("cat", "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")


def lora_merge_config(
    adapters: Sequence[tuple[str, float]],
    method: str,
    *,
    density: float | None = None,
    lambda_: float | None = None,
    normalize: bool | None = None,
) -> dict[str, Any]:
    """The merge config for adapters given on the command line: ``[(path, weight), ...]``."""
    spec = get_method("task_arithmetic" if method == "cat" else method)
    models = []
    for path, weight in adapters:
        params: dict[str, Any] = {"weight": weight}
        if density is not None:
            if "density" not in spec.model_param_names():
                raise UsageError(f"{method} takes no density; drop --density")
            params["density"] = density
        models.append({"model": path, "parameters": params})
    top: dict[str, Any] = {}
    if lambda_ is not None:
        top["lambda"] = lambda_
    if normalize is not None:
        top["normalize"] = normalize
    config: dict[str, Any] = {"merge_method": method, "models": models}
    if top:
        config["parameters"] = top
    return config


def _check_method(method: str, source: str | None) -> None:
    if method not in METHODS:
        issue = f"alloy lora merge supports {', '.join(METHODS)}; got {method!r}"
        raise ConfigError([ConfigIssue(issue, "merge_method")], source)


def parse_merge_config(config: str | Path | Mapping[str, Any]) -> tuple[MergeConfig, str]:
    """The config, validated as a merge config: ``cat`` with task arithmetic's parameters,
    ``base_model`` optional (the adapters name their base; it is not read)."""
    if isinstance(config, Mapping):
        data = dict(config)
        method = str(data.get("merge_method", ""))
        _check_method(method, None)
        if method == "cat":
            data["merge_method"] = "task_arithmetic"
        data.setdefault("base_model", ADAPTERS_BASE)
        return parse_config(data), method
    path = Path(config)
    if not path.is_file():
        raise ConfigError([ConfigIssue(f"config file {path} does not exist", "")])
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None  # parse_config reports it with its line
    method = str(raw.get("merge_method", "")) if isinstance(raw, dict) else ""
    if isinstance(raw, dict):
        _check_method(method, str(path))
    if method == "cat":  # same line count: issues keep their line numbers
        text = re.sub(
            r"^(merge_method\s*:\s*)[\"']?cat[\"']?",
            r"\1task_arithmetic",
            text,
            count=1,
            flags=re.M,
        )
    if isinstance(raw, dict) and "base_model" not in raw:
        if text.lstrip().startswith("{"):  # flow style: validate the mapping instead
            raw["merge_method"] = "task_arithmetic" if method == "cat" else method
            return parse_config({**raw, "base_model": ADAPTERS_BASE}, source=str(path)), method
        text = text.rstrip("\n") + f"\nbase_model: {json.dumps(ADAPTERS_BASE)}\n"
    return parse_config(None, source=str(path), text=text), method


@dataclass
class MergeInput:
    adapter: Adapter | None  # None: the base model listed as an input (a zero delta)
    parameters: dict[str, Any]
    location: str


def open_inputs(config: MergeConfig, spec: MethodSpec) -> list[MergeInput]:
    if config.models is None:
        raise ConfigError(
            [ConfigIssue("alloy lora merge takes `models:`, not `slices:`", "slices")],
            config.source_file,
        )
    config_dir = Path(config.source_file).parent if config.source_file else None
    inputs: list[MergeInput] = []
    try:
        for src in config.models:
            ref = src.model
            if ref == config.base_model and ref.lora is None:
                if spec.base == "none":  # linear: the base is an input whose delta is zero
                    inputs.append(MergeInput(None, dict(src.parameters), src.location))
                continue
            target = ref.lora or ModelRef(ref.path, ref.revision)
            path = resolve_model(target, config_dir)
            if not is_adapter_dir(path):
                raise UsageError(
                    f"{src.location}: {ref} is not a LoRA adapter directory (no "
                    "adapter_config.json, or it holds a full model); `alloy lora merge` merges "
                    "adapters, `alloy merge` merges models."
                )
            inputs.append(MergeInput(open_adapter(path), dict(src.parameters), src.location))
    except BaseException:
        for i in inputs:
            if i.adapter is not None:
                i.adapter.close()
        raise
    return inputs


def check_bases(adapters: list[Adapter], allow_different_bases: bool) -> None:
    first = adapters[0]
    diffs = []
    for other in adapters[1:]:
        for f in BASE_FIELDS:
            if first.config.get(f) != other.config.get(f):
                diffs.append(
                    f"{f}: {first.config.get(f)!r} in {first.path}, "
                    f"{other.config.get(f)!r} in {other.path}"
                )
    if diffs and not allow_different_bases:
        raise IncompatibleModelsError(
            "the adapters were trained on different base models:\n"
            + "\n".join(f"  - {d}" for d in diffs)
            + "\nTheir deltas only add up on one base. If these name the same model (a local "
            "path and a hub id), pass --allow-different-bases."
        )
    for a in adapters:
        if str(a.config.get("bias", "none")) != "none":
            raise LoraNotSupportedError(
                f"{a.path}: bias={a.config.get('bias')!r} trains the base model's biases as full "
                "tensors, which do not merge into one adapter; apply it with `alloy merge` "
                "(model: BASE+ADAPTER) instead."
            )
    with_bias = {bool(a.config.get("lora_bias", False)) for a in adapters}
    if len(with_bias) > 1:
        raise LoraNotSupportedError(
            "some adapters have lora_bias=true and others not; a merged adapter has one setting "
            "for every module. Apply them with `alloy merge` instead."
        )


def replacements(adapters: list[Adapter], notes: list[str]) -> tuple[dict[str, Adapter], list[str]]:
    owner: dict[str, Adapter] = {}
    to_save: list[str] = []
    for a in adapters:
        for key in a.replacements.values():
            if key in owner:
                raise IncompatibleModelsError(
                    f"{key} (modules_to_save) is trained by both {owner[key].path} and {a.path}; "
                    "full replacement tensors do not merge as deltas. Merge into a model with "
                    "`alloy merge` instead."
                )
            owner[key] = a
        to_save += [m for m in a.config.get("modules_to_save") or [] if m not in to_save]
    for key, a in owner.items():
        notes.append(f"{key} is a full tensor (modules_to_save), copied unchanged from {a.path}")
    return owner, to_save


def union_modules(adapters: list[Adapter]) -> dict[str, list[LoraModule | None]]:
    names: dict[str, None] = {}
    for a in adapters:
        names.update(dict.fromkeys(a.modules))
    out: dict[str, list[LoraModule | None]] = {}
    problems = []
    for n in names:
        mods = [a.modules.get(n) for a in adapters]
        kinds = {(m.embedding, ba_shape(a, m)) for a, m in zip(adapters, mods) if m is not None}
        if len(kinds) > 1:
            problems.append(f"{n}: {sorted(kinds)} ((embedding, [out, in]) per adapter)")
        out[n] = mods
    if problems:
        raise IncompatibleModelsError(
            "the adapters' modules do not match:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return out


def ba_shape(a: Adapter, m: LoraModule) -> tuple[int, int]:
    return (a.info(m.b_key).shape[0], a.info(m.a_key).shape[1])


def layer_counts(names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in names:
        split = split_layer_name(n + ".weight")
        if split is not None:
            counts[split[0]] = max(counts.get(split[0], 0), split[1] + 1)
    return counts


def position(name: str, counts: dict[str, int]) -> float:
    split = split_layer_name(name + ".weight")
    return 0.0 if split is None else layer_position(split[1], counts[split[0]])
