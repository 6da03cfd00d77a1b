"""Merging several LoRA adapters into one adapter, on the full per-module deltas.

Each adapter i contributes ``ΔW_i = s_i · B_i @ A_i`` per module (zero where it has no LoRA on
that module), in PEFT's orientation ``[out, in]``. Then, per module:

- ``cat``: task arithmetic computed exactly, ``λ·Σ c_i·ΔW_i`` (``c_i = w_i``, divided by ``Σ w``
  with ``normalize``), written as ``A = [c_i·s_i·A_i]`` stacked on rows and ``B = [B_i]`` on
  columns: the ranks add up, nothing is approximated.
- ``linear``, ``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``: Alloy's merge method
  of that name runs on the deltas (the base is a zero tensor), then the result is factorized by
  truncated SVD to ``rank`` (or the fewest singular values that keep ``energy``), and the retained
  energy is reported per module.

PEFT's ``add_weighted_adapter`` merges the A and B factors separately for the non-SVD types,
which adds cross terms ``B_i A_j``; merging deltas does not. The config is the merge schema
(``merge_method``, ``models`` with ``parameters``, top-level ``parameters``; ``base_model`` names
the adapters' base and is not read), so the config of a full merge over ``base+adapter`` inputs
also merges the adapters into one adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alloy.config.dtypes import named_dtype
from alloy.config.params import resolve_params
from alloy.config.schema import MergeConfig
from alloy.devices import check_device
from alloy.errors import ConfigError, ConfigIssue, MergeComputationError
from alloy.io.lora.adapter import Adapter, LoraModule
from alloy.io.lora.source import lora_delta
from alloy.lora.factorize import check_rank_energy, truncated_svd
from alloy.lora.inputs import (
    MergeInput,
    ba_shape,
    check_bases,
    layer_counts,
    lora_merge_config,
    open_inputs,
    parse_merge_config,
    position,
    replacements,
    union_modules,
)
from alloy.lora.write import OutModule, adapter_config, module_tensors, table, write_adapter
from alloy.methods.registry import MethodSpec, get_method
from alloy.methods.task_vectors import weight_divisor
from alloy.plan.loop import read_ahead
from alloy.plan.seeds import tensor_generator

__all__ = ["LoraMergeResult", "ModuleReport", "lora_merge_config", "merge_adapters"]


@dataclass(frozen=True)
class ModuleReport:
    name: str
    shape: tuple[int, int]  # [out, in] of B @ A
    input_ranks: tuple[int, ...]  # 0 where an adapter has no LoRA on the module
    rank: int
    energy: float  # retained share of ‖ΔW‖_F²
    relative_error: float  # ‖ΔW − B@A‖_F / ‖ΔW‖_F


@dataclass
class LoraMergeResult:
    out_dir: Path
    method: str
    modules: list[ModuleReport]
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            (
                m.name,
                "x".join(map(str, m.shape)),
                "+".join(map(str, m.input_ranks)),
                str(m.rank),
                f"{m.energy:.6f}",
                f"{m.relative_error:.2e}",
            )
            for m in self.modules
        ]
        head = ("module", "shape", "input ranks", "rank", "energy kept", "rel. error")
        return table(rows, head)


def merge_adapters(
    config: str | Path | Mapping[str, Any],
    out: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    randomized: bool = False,
    device: str = "cpu",
    seed: int = 0,
    dtype: str | None = None,
    force: bool = False,
    allow_different_bases: bool = False,
) -> LoraMergeResult:
    """Merge the adapters of ``config`` into the PEFT adapter directory ``out``."""
    cfg, method = parse_merge_config(config)
    exact = method == "cat"
    if not exact:
        check_rank_energy(rank, energy, randomized)
    spec = get_method(cfg.merge_method)
    inputs = open_inputs(cfg, spec)
    adapters = [i.adapter for i in inputs if i.adapter is not None]
    try:
        if not adapters:
            raise ConfigError([ConfigIssue("no adapter among `models`", "models")], cfg.source_file)
        dev = torch.device(check_device(device))
        return _merge(
            cfg, method, spec, inputs, adapters, Path(out),
            rank=rank, energy=energy, randomized=randomized, device=dev,
            seed=seed, dtype=dtype, force=force, allow_different_bases=allow_different_bases,
        )  # fmt: skip
    finally:
        for a in adapters:
            a.close()


def _finite(name: str, *tensors: torch.Tensor) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise MergeComputationError(
            f"{name}: the merged delta holds NaN or Inf; every input's `weight` (and the other "
            "parameters) must be a finite number."
        )


def _merge(
    cfg: MergeConfig,
    method: str,
    spec: MethodSpec,
    inputs: list[MergeInput],
    adapters: list[Adapter],
    out: Path,
    *,
    rank: int | None,
    energy: float | None,
    randomized: bool,
    device: torch.device,
    seed: int,
    dtype: str | None,
    force: bool,
    allow_different_bases: bool,
) -> LoraMergeResult:
    notes: list[str] = []
    check_bases(adapters, allow_different_bases)
    owners, to_save = replacements(adapters, notes)
    lora_bias = bool(adapters[0].config.get("lora_bias", False))
    out_dtype = _out_dtype(dtype, adapters)

    written: list[OutModule] = []
    reports: list[ModuleReport] = []
    job = _Job(spec, method, rank, energy, randomized, device, seed, lora_bias)
    planned = _modules(cfg, spec, inputs, adapters)
    for mod, factors in read_ahead(planned, job.read):
        name = mod.name
        om, report = job.run(name, factors, mod.gparams, mod.mparams)
        if om is None:
            notes.append(f"{name}: the merged delta is zero; the module is left out")
            continue
        written.append(om)
        reports.append(report)
    if not written:
        raise MergeComputationError("every merged delta is zero: there is no adapter to write")

    lead = adapters[0]
    tensors = module_tensors(written, out_dtype)
    for key, a in owners.items():
        tensors[key] = a.get(key).to(out_dtype).contiguous()
    config = adapter_config(
        written,
        base_model=lead.base_model,
        revision=lead.base_revision,
        task_type=lead.config.get("task_type"),
        fan_in_fan_out=lead.fan_in_fan_out,
        modules_to_save=to_save,
        lora_bias=lora_bias,
    )
    result = LoraMergeResult(Path(out), method, reports, notes)
    readme = _readme(result, [a.path for a in adapters], rank, energy)
    result.out_dir = write_adapter(
        out, tensors, config, readme, force=force, inputs=[a.path for a in adapters]
    )
    return result


def _modules(
    cfg: MergeConfig, spec: MethodSpec, inputs: list[MergeInput], adapters: list[Adapter]
) -> list[_Module]:
    """Every module some adapter has, with its parameters resolved as a full merge resolves
    them for its ``.weight``; the parameter errors of all modules raised together."""
    modules = union_modules(adapters)
    counts = layer_counts(list(modules))
    issues: dict[tuple[str, str], ConfigIssue] = {}
    planned: list[_Module] = []
    top = dict(cfg.parameters)
    for name in modules:
        tensor = name + ".weight"  # what parameter filters match, as in a full merge
        t = position(name, counts)
        gparams = resolve_params(spec.params, [top], tensor, t, "parameters", issues)
        mparams = [
            resolve_params(spec.model_params, [i.parameters, top], tensor, t, i.location, issues)
            for i in inputs
        ]
        if gparams is None or any(p is None for p in mparams):
            continue
        by_input = [
            (i.adapter, i.adapter.modules[name])
            if i.adapter is not None and name in i.adapter.modules
            else None
            for i in inputs
        ]
        planned.append(_Module(name, by_input, gparams, [p for p in mparams if p is not None]))
    if issues:
        raise ConfigError(list(issues.values()), cfg.source_file)
    return planned


@dataclass(frozen=True)
class _Module:
    """One module to merge: each input's LoRA on it (None: none) and its parameters."""

    name: str
    by_input: list[tuple[Adapter, LoraModule] | None]
    gparams: Any
    mparams: list[Any]


@dataclass(frozen=True)
class _Factors:
    """One input's LoRA on a module, its factors read (as stored)."""

    adapter: Adapter
    module: LoraModule
    a: torch.Tensor
    b: torch.Tensor
    bias: torch.Tensor | None  # read only for a merge with ``lora_bias``


@dataclass(frozen=True)
class _Job:
    """How every module is merged."""

    spec: MethodSpec
    method: str
    rank: int | None
    energy: float | None
    randomized: bool
    device: torch.device
    seed: int
    lora_bias: bool

    def read(self, mod: _Module) -> list[_Factors | None]:
        """The factors of each input's LoRA on ``mod`` (runs on the reading thread)."""
        out: list[_Factors | None] = []
        for x in mod.by_input:
            if x is None:
                out.append(None)
                continue
            a, m = x
            bias = a.get(m.bias_key) if self.lora_bias and m.bias_key is not None else None
            out.append(_Factors(a, m, a.get(m.a_key), a.get(m.b_key), bias))
        return out

    def run(
        self,
        name: str,
        by_input: list[_Factors | None],
        gparams: Any,
        mparams: list[Any],
    ) -> tuple[OutModule | None, ModuleReport]:
        """Merge one module; ``by_input[i]`` is input i's LoRA on it (None: a zero delta)."""
        present = [x for x in by_input if x is not None]
        a0, m0 = present[0].adapter, present[0].module
        shape = ba_shape(a0, m0)
        ranks = tuple(x.module.rank if x is not None else 0 for x in by_input)
        dev = self.device
        if self.method == "cat":
            om = _cat(name, m0.embedding, by_input, gparams, mparams, self.lora_bias, dev)
            _finite(name, om.b, om.a)
            return om, ModuleReport(name, shape, ranks, om.rank, 1.0, 0.0)
        # The merge runs in the weight's own layout ([vocab, dim] for an embedding, [in, out]
        # for Conv1D) with random streams keyed by the same (seed, tensor name) as a model
        # merge's, and draws indexed by flat position: DARE drops the entries a model merge drops.
        flip = m0.embedding or a0.fan_in_fan_out
        layout = (shape[1], shape[0]) if flip else shape
        deltas = [_delta(x, dev, flip) if x else torch.zeros(layout, device=dev) for x in by_input]
        merged = self._method(name + ".weight", deltas, gparams, mparams)
        del deltas
        if flip:
            merged = merged.T
        bias = None
        if self.lora_bias:
            b_in = [_bias(x, dev) if x else torch.zeros(shape[0], device=dev) for x in by_input]
            bias = self._method(name + ".bias", b_in, gparams, mparams)
        _finite(name, merged, *([bias] if bias is not None else []))
        tensor = name + ".weight"
        svd_gen = tensor_generator(self.seed, tensor + "#svd", dev) if self.randomized else None
        f = truncated_svd(
            merged,
            rank=self.rank,
            energy=self.energy,
            randomized=self.randomized,
            generator=svd_gen,
        )
        del merged
        report = ModuleReport(name, shape, ranks, f.rank, f.energy, f.relative_error)
        b, a = f.b, f.a
        if f.rank == 0:
            if bias is None or not bool(bias.any()):
                return None, report
            b, a = b.new_zeros(shape[0], 1), a.new_zeros(1, shape[1])  # keep the bias
        return OutModule(name, m0.embedding, b, a, bias), report

    def _method(
        self, tensor: str, deltas: list[torch.Tensor], gparams: Any, mparams: list[Any]
    ) -> torch.Tensor:
        """Alloy's merge method on the deltas ``ΔW_i`` (the base is zero)."""
        spec = self.spec
        base = None if spec.base == "none" else torch.zeros_like(deltas[0])
        gen = tensor_generator(self.seed, tensor, self.device) if spec.randomized else None
        return spec.fn(deltas, base, gparams, mparams, gen)


def _out_dtype(name: str | None, adapters: list[Adapter]) -> torch.dtype:
    """``name``, or the dtype of the first adapter's factors."""
    if name is not None:
        return named_dtype(name)
    for a in adapters:
        for m in a.modules.values():
            return a.info(m.a_key).dtype
    return torch.float32


def _delta(f: _Factors, device: torch.device, flip: bool) -> torch.Tensor:
    """``s · B @ A`` [out, in] (its transpose with ``flip``), float32 on ``device``."""
    return lora_delta(f.a.to(device), f.b.to(device), f.module.scale, flip)


def _bias(f: _Factors, device: torch.device) -> torch.Tensor:
    if f.bias is None:
        return torch.zeros(f.b.shape[0], device=device)
    return f.bias.to(device, torch.float32) * f.module.scale


def _cat(
    name: str,
    embedding: bool,
    by_input: list[_Factors | None],
    gparams: Any,
    mparams: list[Any],
    lora_bias: bool,
    device: torch.device,
) -> OutModule:
    """Task arithmetic, exactly: ``A = [c_i·s_i·A_i]`` (rows), ``B = [B_i]`` (columns)."""
    weights = [p.weight for p in mparams]
    c = gparams.lambda_
    if gparams.normalize:
        c = c / weight_divisor(weights)  # as task_arithmetic divides
    a_parts, b_parts, bias = [], [], None
    for x, w in zip(by_input, weights):
        if x is None:
            continue
        a_parts.append(x.a.to(device, torch.float32) * (c * w * x.module.scale))
        b_parts.append(x.b.to(device, torch.float32))
        if lora_bias:
            term = _bias(x, device) * (c * w)
            bias = term if bias is None else bias + term
    return OutModule(name, embedding, torch.cat(b_parts, 1), torch.cat(a_parts, 0), bias)


def _readme(
    result: LoraMergeResult, sources: list[Path], rank: int | None, energy: float | None
) -> str:
    how = (
        "exact (ranks add up)"
        if result.method == "cat"
        else (
            f"truncated SVD of each merged delta (rank {rank}"
            + (f", energy {energy}" if energy else "")
            + ")"
        )
    )
    lines = [
        "---",
        "library_name: peft",
        "tags: [alloy, lora, merge]",
        "---",
        "",
        f"# LoRA adapter merged with Alloy ({result.method})",
        "",
        "Sources:",
        *(f"- `{p}`" for p in sources),
        "",
        f"Per-module deltas merged with `{result.method}`, then {how}.",
        "",
        result.table(),
        "",
        *(f"Note: {n}" for n in result.notes),
    ]
    return "\n".join(lines) + "\n"
