"""Extracting a LoRA adapter from a fine-tune: per module, the truncated SVD of FT − BASE.

The two checkpoints stream past one tensor at a time (one pair of weights and one delta in
memory, plus the factors kept so far, i.e. the adapter being built). For a weight ``W`` of a
module, PEFT's orientation ``[out, in]`` is factorized::

    nn.Linear      M = W_ft − W_base                  lora_A / lora_B
    GPT-2 Conv1D   M = (W_ft − W_base)ᵀ               lora_A / lora_B, fan_in_fan_out
    nn.Embedding   M = (W_ft − W_base)ᵀ               lora_embedding_A / B (with ``embeddings``)

Which layer is which is read from names (architecture knowledge as data below); tensors that a
LoRA cannot hold (norms, biases: 1-D) are listed in the report with their change, not dropped
silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from alloy.arch.infer import is_input_embedding
from alloy.config.dtypes import named_dtype
from alloy.config.modelref import ModelRefSyntaxError, parse_model_ref
from alloy.devices import check_device
from alloy.errors import IncompatibleModelsError, UsageError
from alloy.lora.factorize import check_rank_energy, truncated_svd
from alloy.lora.write import OutModule, adapter_config, module_tensors, table, write_adapter
from alloy.plan.loop import read_ahead
from alloy.plan.models import InputModel, open_all
from alloy.plan.seeds import tensor_generator

# transformers' Conv1D (weight [in, out]) by model_type: the module leaf names that use it
CONV1D: dict[str, tuple[str, ...]] = {"gpt2": ("c_attn", "c_proj", "c_fc")}
# nn.Embedding modules besides the token embeddings the architecture tables know
EMBEDDING_LEAVES = ("wpe", "position_embeddings", "token_type_embeddings", "embed_positions")


@dataclass(frozen=True)
class ExtractedModule:
    tensor: str
    shape: tuple[int, ...]
    kind: str  # linear | conv1d | embedding | not extracted: <why>
    rank: int
    energy: float  # retained share of ‖ΔW‖_F²
    relative_error: float  # ‖ΔW − adapter delta‖_F / ‖ΔW‖_F
    relative_change: float  # ‖ΔW‖_F / ‖W_base‖_F


@dataclass
class ExtractResult:
    out_dir: Path
    modules: list[ExtractedModule]
    notes: list[str] = field(default_factory=list)

    @property
    def extracted(self) -> list[ExtractedModule]:
        return [m for m in self.modules if m.rank > 0]

    def table(self) -> str:
        rows = [
            (
                m.tensor,
                "x".join(map(str, m.shape)),
                m.kind,
                str(m.rank) if m.rank else "-",
                f"{m.energy:.6f}" if m.rank else "-",
                f"{m.relative_error:.2e}" if m.rank else "-",
                f"{m.relative_change:.2e}",
            )
            for m in self.modules
        ]
        head = ("tensor", "shape", "kind", "rank", "energy kept", "rel. error", "|ΔW|/|W|")
        return table(rows, head)


def _kind(name: str, model_type: str, embeddings: bool) -> str:
    module, _, param = name.rpartition(".")
    leaf = module.rpartition(".")[2]
    if param != "weight":
        return "not extracted: not a weight"
    if is_input_embedding(name) or leaf in EMBEDDING_LEAVES:
        return "embedding" if embeddings else "not extracted: embedding (use --embeddings)"
    if leaf in CONV1D.get(model_type, ()):
        return "conv1d"
    return "linear"


def _open(model: str, base: str) -> tuple[InputModel, InputModel]:
    try:
        refs = [parse_model_ref(model), parse_model_ref(base)]
    except ModelRefSyntaxError as e:
        raise UsageError(str(e)) from e
    models = open_all(refs)
    return models[refs[0]], models[refs[1]]


def _check_names(ft: InputModel, base: InputModel) -> None:
    a, b = set(ft.weights.names()), set(base.weights.names())
    problems = [f"{n} is in the fine-tune only" for n in sorted(a - b)]
    problems += [f"{n} is in the base only" for n in sorted(b - a)]
    for n in sorted(a & b):
        sa, sb = ft.weights.info(n).shape, base.weights.info(n).shape
        if sa != sb:
            problems.append(f"{n}: shape {list(sa)} in the fine-tune, {list(sb)} in the base")
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:8])
        more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise IncompatibleModelsError(
            f"the fine-tune {ft.ref} and the base {base.ref} do not have the same tensors:\n"
            f"{shown}{more}\nA LoRA adapter changes weights of a fixed shape; extract from a "
            "fine-tune of this very base."
        )


def extract_lora(
    model: str,
    base: str,
    out: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    randomized: bool = False,
    embeddings: bool = False,
    device: str = "cpu",
    seed: int = 0,
    dtype: str | None = None,
    force: bool = False,
) -> ExtractResult:
    """Write to ``out`` a LoRA adapter that turns ``base`` into (approximately) ``model``."""
    check_rank_energy(rank, energy, randomized)
    out_named = named_dtype(dtype) if dtype else None
    dev = torch.device(check_device(device))
    ft, bm = _open(model, base)
    try:
        _check_names(ft, bm)
        written, reports, conv1d = _factorize(
            ft, bm, rank=rank, energy=energy, randomized=randomized,
            embeddings=embeddings, device=dev, seed=seed,
        )  # fmt: skip
        if not written:
            raise IncompatibleModelsError(
                f"{ft.ref} and {bm.ref} have no weight that a LoRA can hold changed "
                "(they are identical, or differ only in 1-D tensors / embeddings)"
            )
        out_dtype = out_named or _first_float(bm)
        arch = (bm.config.get("architectures") or [""])[0]
        config = adapter_config(
            written,
            base_model=base,
            task_type="CAUSAL_LM" if str(arch).endswith("ForCausalLM") else None,
            fan_in_fan_out=conv1d,
        )
        result = ExtractResult(Path(out), reports)
        skipped = [m for m in reports if m.rank == 0]
        if skipped:
            result.notes.append(
                f"{len(skipped)} changed tensor(s) are not in the adapter (see the table); "
                "applying it to the base leaves them as in the base"
            )
        readme = _readme(result, model, base, rank, energy)
        inputs = [p for m in (ft, bm) for p in m.paths]
        result.out_dir = write_adapter(
            Path(out),
            module_tensors(written, out_dtype),
            config,
            readme,
            force=force,
            inputs=inputs,
        )
        return result
    finally:
        ft.close()
        bm.close()


def _factorize(
    ft: InputModel,
    bm: InputModel,
    *,
    rank: int | None,
    energy: float | None,
    randomized: bool,
    embeddings: bool,
    device: torch.device,
    seed: int,
) -> tuple[list[OutModule], list[ExtractedModule], bool]:
    """Every float tensor's delta, factorized where a LoRA can hold it: (the modules, the
    report rows, whether a Conv1D module is among them)."""
    model_type = str(bm.config.get("model_type", ""))
    written: list[OutModule] = []
    reports: list[ExtractedModule] = []
    conv1d = False
    floats = [n for n in bm.weights.names() if bm.weights.info(n).dtype.is_floating_point]

    def read(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return bm.weights.get(name), ft.weights.get(name)

    for name, (stored_base, stored_ft) in read_ahead(floats, read):
        info = bm.weights.info(name)
        w_base = stored_base.to(device, torch.float32)
        delta = stored_ft.to(device, torch.float32) - w_base
        del stored_base, stored_ft
        change = float(delta.norm() / w_base.norm().clamp_min(1e-30))
        del w_base
        if not bool(delta.any()):
            continue  # unchanged
        kind = _kind(name, model_type, embeddings) if delta.dim() == 2 else "not extracted: 1-D"
        if kind.startswith("not extracted"):
            reports.append(ExtractedModule(name, info.shape, kind, 0, 0.0, 1.0, change))
            continue
        m = delta if kind == "linear" else delta.T  # PEFT's [out, in]
        gen = tensor_generator(seed, name, device) if randomized else None
        f = truncated_svd(m, rank=rank, energy=energy, randomized=randomized, generator=gen)
        del delta, m
        conv1d |= kind == "conv1d"
        module = name.removesuffix(".weight")
        written.append(OutModule(module, kind == "embedding", f.b.cpu(), f.a.cpu()))
        reports.append(
            ExtractedModule(name, info.shape, kind, f.rank, f.energy, f.relative_error, change)
        )
    return written, reports, conv1d


def _first_float(m: InputModel) -> torch.dtype:
    for n in m.weights.names():
        dt = m.weights.info(n).dtype
        if dt.is_floating_point:
            return dt
    return torch.float32


def _readme(
    result: ExtractResult, model: str, base: str, rank: int | None, energy: float | None
) -> str:
    keep = " and ".join(
        x for x in (f"rank ≤ {rank}" if rank else "", f"energy {energy}" if energy else "") if x
    )
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {base}",
        "tags: [alloy, lora, extracted]",
        "---",
        "",
        "# LoRA adapter extracted with Alloy",
        "",
        f"`{model}` − `{base}`, per module by truncated SVD ({keep}).",
        "",
        result.table(),
        "",
        *(f"Note: {n}" for n in result.notes),
    ]
    return "\n".join(lines) + "\n"
