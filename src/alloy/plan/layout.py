"""The output layout: which output tensors exist and which input tensor feeds each of them.

A config's ``models:`` list is one slice covering every layer. ``slices:`` stack layer ranges
(frankenmerges): output layer ``L`` of a slice takes layer ``start + idx`` of each source.
Tensors before the layer stack come from the first slice's sources, tensors after it from the
last slice's (as in mergekit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alloy.arch.infer import Stack, is_output_embedding, split_layer_name
from alloy.config.params import layer_position
from alloy.config.schema import InputSource, MergeConfig, ModelRef, OutputSlice
from alloy.plan.models import InputModel


@dataclass(frozen=True)
class SliceSpec:
    """A normalized output slice: its sources (base included where the method uses one)."""

    sources: tuple[InputSource, ...]
    base_index: int | None  # which source is the base, if any
    parameters: dict[str, Any]
    location: str


@dataclass(frozen=True)
class OutSpec:
    """One output tensor: its name, the slice whose sources feed it, their tensor names."""

    name: str
    slice_index: int
    input_names: tuple[str, ...]  # one per source of the slice
    t: float


def normalize_slices(
    config: MergeConfig, uses_base: bool, notes: list[str]
) -> list[tuple[OutputSlice, ModelRef | None]]:
    """The config as a list of (slice, base); the base is added to a slice's sources when the
    method uses one and it is not listed."""
    if config.models is not None:
        sources = list(config.models)
        base = config.base_model
        if base is not None and uses_base and all(s.model != base for s in sources):
            sources.append(InputSource(base, None, {}, "base_model"))
        elif base is not None and not uses_base and all(s.model != base for s in sources):
            notes.append(
                f"{config.merge_method} does not use a base model: base_model {base} is not "
                "listed under models, so it takes no part in the merge"
            )
        return [(OutputSlice(tuple(sources), None, {}, "models"), base)]
    out = []
    for sl in config.slices or ():
        base = sl.base_model or config.base_model
        sources = list(sl.sources)
        if base is not None and uses_base and all(s.model != base for s in sources):
            first = sources[0].layer_range
            sources.append(InputSource(base, first, {}, f"{sl.location}.base_model"))
            notes.append(
                f"{sl.location}: base model {base} is not among the sources; its layers "
                f"{list(first) if first else 'all'} are used as the base"
            )
        out.append((OutputSlice(tuple(sources), sl.base_model, sl.parameters, sl.location), base))
    return out


def _layer_rest(stack: Stack, index: int) -> list[str]:
    return stack.layers.get(index, [])


def output_tensors(
    slices: list[SliceSpec],
    models: Mapping[ModelRef, InputModel],
    by_slices: bool,
) -> tuple[list[OutSpec], list[int] | None, list[str]]:
    """The output tensors in write order, the source layer of every output layer (for the
    config of a frankenmerge; None for ``models:``), and the problems found."""
    problems: list[str] = []
    first = slices[0]
    ref_model = models[first.sources[first.base_index or 0].model]
    if not by_slices:
        return _whole_model_layout(first, models, ref_model), None, problems

    def stack_of(m: InputModel, where: str) -> Stack | None:
        if len(m.arch.stacks) != 1:
            problems.append(
                f"{where}: slices need a model with one stack of layers; {m.ref} has "
                f"{len(m.arch.stacks)} ({', '.join(m.arch.stacks) or 'none'})"
            )
            return None
        return next(iter(m.arch.stacks.values()))

    out: list[OutSpec] = []
    ref_stack = stack_of(ref_model, first.location)
    if ref_stack is None:
        return [], None, problems
    pre_names = [n for n in models[first.sources[0].model].arch.pre]
    for n in pre_names:
        out.append(OutSpec(n, 0, tuple(n for _ in first.sources), 0.0))
    layer_sources: list[int] = []
    for si, sl in enumerate(slices):
        stacks = [stack_of(models[s.model], s.location) for s in sl.sources]
        if any(st is None for st in stacks):
            continue
        for s, st in zip(sl.sources, stacks):
            assert st is not None and s.layer_range is not None
            if s.layer_range[1] > st.num_layers:
                problems.append(
                    f"{s.location}: layer_range {list(s.layer_range)} is out of range: "
                    f"{s.model} has {st.num_layers} layers (0..{st.num_layers - 1}); "
                    "ranges are half-open [start, end)"
                )
        if problems:
            continue
        found = [st for st in stacks if st is not None]
        specs, sources = _slice_layers(si, sl, found, ref_stack, len(layer_sources), problems)
        out += specs
        layer_sources += sources
    last = slices[-1]
    post_names = list(models[last.sources[0].model].arch.post)
    _add_untied_head(post_names, last, models)
    for n in post_names:
        out.append(OutSpec(n, len(slices) - 1, tuple(n for _ in last.sources), 0.0))
    return out, layer_sources, problems


def _slice_layers(
    si: int,
    sl: SliceSpec,
    stacks: list[Stack],
    ref_stack: Stack,
    out_layer: int,
    problems: list[str],
) -> tuple[list[OutSpec], list[int]]:
    """The output tensors of slice ``si`` (whose sources have ``stacks``), from output layer
    ``out_layer`` on, and the source layer of each of its output layers; a source layer with
    other tensors than the lead source's is added to ``problems``."""
    out: list[OutSpec] = []
    layer_sources: list[int] = []
    lead = sl.sources[0]
    ranges = [s.layer_range for s in sl.sources if s.layer_range is not None]
    assert len(ranges) == len(sl.sources)  # every slice source has one (config/load.py)
    starts = [r[0] for r in ranges]
    count = ranges[0][1] - ranges[0][0]
    for idx in range(count):
        src_layers = [start + idx for start in starts]
        rests = _layer_rest(stacks[0], src_layers[0])
        for s, st, li in zip(sl.sources[1:], stacks[1:], src_layers[1:]):
            other = _layer_rest(st, li)
            if sorted(other) != sorted(rests):
                diff = sorted(set(rests) ^ set(other))[:4]
                problems.append(
                    f"{s.location}: layer {li} of {s.model} has other tensors than layer "
                    f"{src_layers[0]} of {lead.model} (differing: {', '.join(diff)})"
                )
        t = layer_position(idx, count)
        for rest in rests:
            ins = tuple(st.full_name(li, rest) for st, li in zip(stacks, src_layers))
            out.append(OutSpec(ref_stack.full_name(out_layer, rest), si, ins, t))
        layer_sources.append(src_layers[0])
        out_layer += 1
    return out, layer_sources


def _add_untied_head(
    names: list[str], sl: SliceSpec, models: Mapping[ModelRef, InputModel]
) -> None:
    """If the reference model ties its head but another source stores one, the output stores
    it too (the tied models contribute their input embedding)."""
    for s in sl.sources:
        for n in models[s.model].arch.post:
            if is_output_embedding(n) and n not in names:
                names.append(n)


def _whole_model_layout(
    sl: SliceSpec, models: Mapping[ModelRef, InputModel], ref: InputModel
) -> list[OutSpec]:
    """Every tensor of the reference model, plus a head that another input stores. That the
    inputs share these tensors (layer counts, names, shapes) is `alloy.arch.compat`'s check,
    which the planner runs before the layout."""
    names = list(ref.arch.pre)
    for stack in ref.arch.stacks.values():
        for i in sorted(stack.layers):
            names += [stack.full_name(i, r) for r in stack.layers[i]]
    post = list(ref.arch.post)
    _add_untied_head(post, sl, models)
    names += post
    out: list[OutSpec] = []
    for n in names:
        split = split_layer_name(n)
        t = 0.0
        if split is not None:
            stack_name, idx, _ = split
            t = layer_position(idx, ref.arch.stacks[stack_name].num_layers)
        out.append(OutSpec(n, 0, tuple(n for _ in sl.sources), t))
    return out
