"""Config -> plan: one `TensorJob` per output tensor, from headers only.

For every output tensor the planner decides the input tensors, the method, the resolved
parameters (after precedence, filters and layer gradients), the output dtype and shard. It
reads no tensor data: `alloy plan` prints the result with a memory estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from alloy.arch.compat import check_models, resolve_tensor, tensor_difference
from alloy.arch.differences import CompatReport, Difference
from alloy.arch.infer import is_embedding, is_output_embedding, remap_config_layers
from alloy.config.dtypes import DTYPES
from alloy.config.fallback import slerp_fallbacks
from alloy.config.ignored import refuse_ignored
from alloy.config.params import resolve_params
from alloy.config.schema import MergeConfig, ModelRef
from alloy.errors import ConfigError, ConfigIssue, IncompatibleModelsError
from alloy.io.sharding import plan_shards
from alloy.io.sources import TensorInfo
from alloy.io.writer import OutTensor
from alloy.methods.registry import MethodSpec, Params, get_method
from alloy.plan.layout import OutSpec, SliceSpec, normalize_slices, output_tensors
from alloy.plan.models import InputModel
from alloy.plan.vocab import RowMap, VocabPlan, aligner_for

log = logging.getLogger("alloy")

MAX_LISTED = 8


@dataclass(frozen=True)
class InputRef:
    """One input tensor: which model, which tensor name, where the config lists it, and its
    stored shape and dtype."""

    model: ModelRef
    name: str
    label: str
    info: TensorInfo
    # a token-indexed tensor of a merge that aligns vocabularies: how its rows are gathered
    vocab: RowMap | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TensorJob:
    name: str
    info: TensorInfo  # output shape and dtype
    inputs: tuple[InputRef, ...]  # non-base inputs, in config order
    base: InputRef | None
    params: Params | None
    model_params: tuple[Params, ...]
    t: float
    copy_only: bool = False  # integer/bool buffers: copied from the base (or first input)
    embedding: bool = False  # a token embedding or output head (see MethodSpec.embedding_fn)

    @property
    def all_inputs(self) -> tuple[InputRef, ...]:
        return (*self.inputs, *((self.base,) if self.base else ()))


@dataclass(frozen=True)
class PlannedModel:
    """An input model as the plan saw it: where it is, and its size (no open file)."""

    ref: ModelRef
    path: Path  # the (base) checkpoint directory: config.json, tokenizer
    adapter: Path | None  # the LoRA adapter applied on the fly, if any
    tensors: int
    nbytes: int

    @property
    def paths(self) -> list[Path]:
        """Every directory this input reads (an output must not overlap any of them)."""
        return [self.path, *([self.adapter] if self.adapter else [])]

    @classmethod
    def of(cls, model: InputModel) -> PlannedModel:
        names = model.weights.names()
        size = sum(model.weights.info(n).nbytes for n in names)
        return cls(model.ref, model.path, model.adapter, len(names), size)


@dataclass(frozen=True)
class MergePlan:
    """What a merge will do, decided from headers: a value, holding no open file. The
    caller opens the sources (`alloy.plan.models.open_models`) and hands them to the executor
    beside the plan."""

    config: MergeConfig
    method: MethodSpec
    models: Mapping[ModelRef, PlannedModel]  # every model the config references
    jobs: tuple[TensorJob, ...]
    shards: tuple[tuple[int, ...], ...]  # job indices per output shard
    output_config: Mapping[str, Any]  # config.json of the merge
    donor: ModelRef  # the model config.json and generation_config.json come from
    notes: tuple[str, ...] = ()
    compat: CompatReport | None = None  # the compatibility check run before planning
    vocab: VocabPlan | None = None  # the vocabulary alignment (`tokenizer:`), when there is one

    def input_info(self, ref: InputRef) -> TensorInfo:
        return ref.info

    @property
    def bytes_to_read(self) -> int:
        return sum(r.info.nbytes for j in self.jobs for r in j.all_inputs)

    @property
    def bytes_to_write(self) -> int:
        return sum(j.info.nbytes for j in self.jobs)

    def shard_layout(self) -> list[list[OutTensor]]:
        return [[OutTensor(self.jobs[i].name, self.jobs[i].info) for i in s] for s in self.shards]


def choose_method(config: MergeConfig, strict: bool, notes: list[str]) -> MethodSpec:
    """The method to run. slerp over more than two models switches to ties (with a base) or
    multislerp (without), with a warning; ``strict`` makes that an error."""
    spec = get_method(config.merge_method)
    base = config.base_model
    fallbacks = slerp_fallbacks(spec.name, _most_models(config))
    if fallbacks is None:
        return spec
    fallback = fallbacks[0] if base is not None else fallbacks[1]
    msg = (
        f"slerp interpolates exactly two models; this config has more, so Alloy switches to "
        f"{fallback} ({'a base model is given' if base else 'no base model is given'})"
    )
    if strict:
        issue = ConfigIssue(msg + "; --strict makes this an error", "merge_method")
        raise ConfigError([issue], config.source_file, config.lines)
    notes.append(msg)
    return get_method(fallback)


def _most_models(config: MergeConfig) -> int:
    """The most models one tensor of ``config`` merges: a group's entries, or its distinct
    models with the base, whichever is more."""
    groups = (
        [config.models] if config.models is not None else [s.sources for s in config.slices or ()]
    )
    extra = {config.base_model} if config.base_model else set()
    return max((max(len(g), len({s.model for s in g} | extra)) for g in groups), default=0)


def build_plan(
    config: MergeConfig,
    models: Mapping[ModelRef, InputModel],
    *,
    out_shard_size: int = 5_000_000_000,
    strict: bool = False,
    allow_crimes: bool = False,
) -> MergePlan:
    """The plan of ``config`` over its opened ``models`` (`alloy.plan.models.open_models`;
    headers, configs and architectures only: no tensor is read). The models stay the
    caller's to close. ``strict`` refuses what Alloy otherwise accepts with a warning: keys
    mergekit ignores (`MergeConfig.ignored`), and slerp over more than two models."""
    # keys mergekit ignores (config/ignored.py): warnings first, errors with ``strict``
    if strict:
        refuse_ignored(config)
    notes = [k.render(config.source_file) for k in config.ignored]
    method = choose_method(config, strict, notes)
    if config.modules:  # a multi-module model: one plan per module, combined
        from alloy.plan.modules import plan_modules

        def plan_one(
            sub: MergeConfig, m: MethodSpec, ms: Mapping[ModelRef, InputModel], n: list[str]
        ) -> MergePlan:
            return _plan(sub, m, ms, n, out_shard_size, allow_crimes)

        return plan_modules(config, method, models, notes, out_shard_size, plan_one)
    return _plan(config, method, models, notes, out_shard_size, allow_crimes)


def _plan(
    config: MergeConfig,
    method: MethodSpec,
    models: Mapping[ModelRef, InputModel],
    notes: list[str],
    out_shard_size: int,
    allow_crimes: bool,
) -> MergePlan:
    slices = _check_slices(config, method, notes)
    aligner = aligner_for(config, models, [s.sources for s in slices])
    if aligner is not None:  # token-indexed tensors seen with the output vocabulary's rows
        models = aligner.view(models)
    report = compatibility(config, slices, models)
    if aligner is not None:
        aligner.settle(report)
    report.enforce(allow_crimes, notes)
    outs, layer_sources, problems = output_tensors(slices, models, config.slices is not None)
    if problems:
        raise IncompatibleModelsError(_listing("the models cannot be merged", problems))

    jobs_of = _Jobs(config, method, models, DTYPES.get(config.out_dtype or config.dtype or ""))
    jobs: list[TensorJob] = []
    mismatched: list[Difference] = []
    for o in outs:
        job = jobs_of.job_for(o, slices[o.slice_index], report.labels, mismatched)
        if job is not None:
            jobs.append(job)
    if jobs_of.issues:
        raise ConfigError(list(jobs_of.issues.values()), config.source_file, config.lines)
    if mismatched:
        report.differences[:0] = mismatched
        raise IncompatibleModelsError(report.error_message(allow_crimes), report=report)

    donor = config.base_model or slices[0].sources[0].model
    out_cfg = _output_config(models[donor], jobs, layer_sources, config, jobs_of.out_dtype)
    vocab = None
    if aligner is not None:
        jobs = [aligner.align(j) for j in jobs]
        out_cfg = aligner.output_config(out_cfg)
        vocab = aligner.finish()
        notes += vocab.notes
    shards = plan_shards([j.info.nbytes for j in jobs], out_shard_size)
    for n in notes:
        log.warning(n)
    planned = {ref: PlannedModel.of(models[ref]) for ref in config.all_models()}
    return MergePlan(
        config,
        method,
        MappingProxyType(planned),
        tuple(jobs),
        tuple(tuple(s) for s in shards),
        MappingProxyType(out_cfg),
        donor,
        tuple(notes),
        report,
        vocab,
    )


def _check_slices(config: MergeConfig, method: MethodSpec, notes: list[str]) -> list[SliceSpec]:
    """The config's slices, normalized (the base added where the method uses one); raises every
    slice without a needed base or with the wrong number of models at once. A model listed
    twice is a note."""
    uses_base = method.base != "none"
    issues: dict[tuple[str, str], ConfigIssue] = {}
    slices: list[SliceSpec] = []
    seen: dict[ModelRef, str] = {}
    for sl, base in normalize_slices(config, uses_base, notes):
        base_index = None
        if uses_base and base is not None:
            base_index = next(i for i, s in enumerate(sl.sources) if s.model == base)
        for s in sl.sources:
            if config.models is not None and s.model in seen and s.location != "base_model":
                notes.append(
                    f"{s.location}: {s.model} is listed again (first at {seen[s.model]}); each "
                    "entry is its own input (mergekit silently merges them into one)"
                )
            seen.setdefault(s.model, s.location)
        n_inputs = len(sl.sources) - (base_index is not None)
        if method.base == "required" and base_index is None:
            issues[(sl.location, "base")] = ConfigIssue(
                f"{method.name} needs a base model: set `base_model`", sl.location
            )
        if n_inputs < method.min_models or (
            method.max_models is not None and n_inputs > method.max_models
        ):
            issues[(sl.location, "count")] = ConfigIssue(
                f"{method.name} takes {_model_count(method)} model(s) besides the base; "
                f"got {n_inputs}",
                sl.location,
            )
        slices.append(SliceSpec(sl.sources, base_index, sl.parameters, sl.location))
    if issues:
        raise ConfigError(list(issues.values()), config.source_file, config.lines)
    return slices


def _model_count(method: MethodSpec) -> str:
    if method.max_models == method.min_models:
        return f"exactly {method.min_models}"
    most = f" and at most {method.max_models}" if method.max_models else ""
    return f"at least {method.min_models}{most}"


@dataclass
class _Jobs:
    """Builds the `TensorJob` of each output tensor; parameter problems collect in ``issues``
    (one per location and key), raised together once every tensor is planned."""

    config: MergeConfig
    method: MethodSpec
    models: Mapping[ModelRef, InputModel]
    out_dtype: torch.dtype | None
    issues: dict[tuple[str, str], ConfigIssue] = field(default_factory=dict)

    def job_for(
        self, o: OutSpec, spec: SliceSpec, labels: list[str], mismatched: list[Difference]
    ) -> TensorJob | None:
        """The job of output tensor ``o``, or None: its inputs differ in shape (added to
        ``mismatched``) or its parameters have problems (added to ``issues``)."""
        refs: list[InputRef] = []
        entries: list[tuple[str, TensorInfo | None]] = []
        for s, name in zip(spec.sources, o.input_names):
            m = self.models[s.model]
            actual = resolve_tensor(m, name)  # a tied head resolves to the input embedding
            info_in = m.weights.info(actual) if actual else None
            entries.append((str(s.model), info_in))
            if info_in is not None:
                refs.append(InputRef(s.model, actual or name, s.location, info_in))
        sources_hint = ", ".join(
            f"{s.location}: {n}" for s, n in zip(spec.sources, o.input_names) if n != o.name
        )
        diff = tensor_difference(o.name, entries, labels, sources_hint)
        if diff is not None:
            mismatched.append(diff)
            return None
        infos = [i for _, i in entries if i is not None]
        base_ref = refs[spec.base_index] if spec.base_index is not None else None
        inputs = tuple(r for i, r in enumerate(refs) if i != spec.base_index)
        ref_info = infos[spec.base_index if spec.base_index is not None else 0]
        floating = ref_info.dtype.is_floating_point
        dtype = self.out_dtype if (self.out_dtype is not None and floating) else ref_info.dtype
        info = TensorInfo(ref_info.shape, dtype)
        if not floating:
            return TensorJob(o.name, info, inputs, base_ref, None, (), o.t, copy_only=True)
        resolved = self._params(o, spec)
        if resolved is None or len(resolved[1]) != len(inputs):
            return None
        params, mparams = resolved
        return TensorJob(
            o.name, info, inputs, base_ref, params, mparams, o.t, embedding=is_embedding(o.name)
        )

    def _params(self, o: OutSpec, spec: SliceSpec) -> tuple[Params, tuple[Params, ...]] | None:
        """The method's parameters and each non-base input's, resolved for tensor ``o``
        (None where the global ones have a problem; a per-model problem leaves that model out)."""
        top, slice_params = self.config.parameters, spec.parameters
        params = resolve_params(
            self.method.params, [slice_params, top], o.name, o.t, spec.location, self.issues
        )
        mparams: list[Params] = []
        for i, (s, name_in) in enumerate(zip(spec.sources, o.input_names)):
            if i == spec.base_index:
                continue
            mp = resolve_params(
                self.method.model_params,
                [s.parameters, slice_params, top],
                name_in,
                o.t,
                s.location,
                self.issues,
                defaults=_fallback_defaults(self.config, self.method),
            )
            if mp is not None:
                mparams.append(mp)
        return None if params is None else (params, tuple(mparams))


def compatibility(
    config: MergeConfig, slices: list[SliceSpec], models: Mapping[ModelRef, InputModel]
) -> CompatReport:
    """`alloy check` on the models that take part in the merge (and the tokenizer source):
    for ``models:`` every tensor must line up; for ``slices:`` the layer counts may differ and
    each output tensor is checked as it is planned."""
    taking_part = list(dict.fromkeys(s.model for sl in slices for s in sl.sources))
    tok = config.tokenizer_source
    extra = (
        [(str(tok), models[tok].path)]
        if isinstance(tok, ModelRef) and tok not in taking_part
        else []
    )
    return check_models(
        [models[r] for r in taking_part],
        [str(r) for r in taking_part],
        whole_model=config.models is not None,
        extra_tokenizers=extra,
    )


def _fallback_defaults(config: MergeConfig, method: MethodSpec) -> dict[str, Any] | None:
    # slerp's replacement methods need per-model weights the slerp config never had
    if config.merge_method == "slerp" and method.name != "slerp":
        return {"weight": 1.0}
    return None


def _listing(head: str, items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{head}:\n" + "\n".join(f"  - {i}" for i in shown) + more


def _output_config(
    donor: InputModel,
    jobs: list[TensorJob],
    layer_sources: list[int] | None,
    config: MergeConfig,
    out_dtype: torch.dtype | None,
) -> dict[str, Any]:
    cfg = dict(donor.config)
    stack = donor.arch.main_stack
    if layer_sources is not None and stack is not None:
        cfg = remap_config_layers(cfg, stack.num_layers, layer_sources)
    names = {j.name for j in jobs}
    has_head = any(is_output_embedding(n) for n in names)
    if "tie_word_embeddings" in cfg or has_head:
        cfg["tie_word_embeddings"] = not has_head
    dtype = out_dtype
    if dtype is None:
        floats = [j.info.dtype for j in jobs if j.info.dtype.is_floating_point]
        dtype = floats[0] if floats else None
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        cfg["torch_dtype"] = name
        if "dtype" in cfg:
            cfg["dtype"] = name
    return cfg
