"""Plans of multi-module merges (``modules:``): each module (text decoder, vision tower,
projector) is planned with its own definition over the whole models, and each output tensor is
taken from the plan of the module it belongs to (`alloy.arch.modules`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from alloy.arch.modules import MODULES, module_names, module_of
from alloy.config.schema import MergeConfig, ModelRef, ModuleDef
from alloy.errors import ConfigError, ConfigIssue
from alloy.io.sharding import plan_shards
from alloy.methods.registry import MethodSpec
from alloy.plan.models import InputModel

if TYPE_CHECKING:
    from alloy.plan.planner import MergePlan

PlanOne = Callable[..., "MergePlan"]


def _model_type(config: MergeConfig, models: Mapping[ModelRef, InputModel]) -> str:
    first = config.modules[0] if config.modules else None
    ref = config.base_model
    if ref is None and first is not None:
        ref = (first.models or first.slices[0].sources)[0].model  # type: ignore[index]
    assert ref is not None
    return str(models[ref].config.get("model_type", ""))


def _check_modules(config: MergeConfig, model_type: str) -> None:
    known = module_names(model_type)
    where = "modules"
    if known is None:
        msg = (
            f"`modules:` needs the modules of the architecture, and Alloy knows none of "
            f"model type {model_type!r} (known: {', '.join(sorted(MODULES))}); merge it with "
            "`models:` (every tensor with one definition)"
        )
        raise ConfigError([ConfigIssue(msg, where)], config.source_file, config.lines)
    sliced = [m for m in config.modules or () if m.slices is not None]
    if sliced:
        msg = (
            f"`slices:` inside a module of a multi-module model ({sliced[0].name}) is not "
            "supported yet: the layer stacks of such a checkpoint are not sliced; give the "
            "module `models:`"
        )
        raise ConfigError([ConfigIssue(msg, sliced[0].location)], config.source_file, config.lines)
    unknown = [m for m in config.modules or () if m.name not in known]
    if unknown:
        msg = (
            f"{model_type} has the modules {', '.join(known)}; "
            f"{', '.join(repr(m.name) for m in unknown)} is none of them"
        )
        raise ConfigError([ConfigIssue(msg, unknown[0].location)], config.source_file, config.lines)


def plan_modules(
    config: MergeConfig,
    method: MethodSpec,
    models: Mapping[ModelRef, InputModel],
    notes: list[str],
    out_shard_size: int,
    plan_one: PlanOne,
) -> MergePlan:
    """One plan per module (``plan_one``: the planner of a plain config), combined: every
    tensor from its own module's plan, in the first plan's order."""
    model_type = _model_type(config, models)
    _check_modules(config, model_type)
    plans: dict[str, MergePlan] = {}
    for i, module in enumerate(config.modules or ()):
        sub = _module_config(config, module)
        plans[module.name] = plan_one(sub, method, models, notes if i == 0 else [])
    order = next(iter(plans.values())).jobs
    jobs, missing = [], []
    for job in order:
        owner = module_of(model_type, job.name)
        if owner in plans:
            jobs.append(next(j for j in plans[owner].jobs if j.name == job.name))
        else:
            missing.append(f"{job.name} ({owner or 'no module'})")
    if missing:
        msg = (
            f"these tensors belong to no module the config lists ({', '.join(plans)}): "
            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}; add their module "
            f"(the modules of {model_type}: {', '.join(module_names(model_type) or ())})"
        )
        raise ConfigError([ConfigIssue(msg, "modules")], config.source_file, config.lines)
    first = next(iter(plans.values()))
    planned = {ref: p for plan in plans.values() for ref, p in plan.models.items()}
    shards = plan_shards([j.info.nbytes for j in jobs], out_shard_size)
    all_notes = list(dict.fromkeys(n for plan in plans.values() for n in plan.notes))
    return dataclasses.replace(
        first,
        config=config,
        models=MappingProxyType(planned),
        jobs=tuple(jobs),
        shards=tuple(tuple(s) for s in shards),
        notes=tuple(all_notes),
    )


def _module_config(config: MergeConfig, module: ModuleDef) -> MergeConfig:
    return dataclasses.replace(
        config,
        models=module.models,
        slices=module.slices,
        parameters=module.parameters,
        modules=None,
    )
