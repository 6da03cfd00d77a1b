"""Parity with mergekit 0.1.5: the same YAML on the same tiny checkpoints gives the same tensors.

Each test runs mergekit in-process (the oracle) and `alloy.merge` on one config, then compares the
two output directories tensor by tensor: same names, shapes and dtypes, and
||alloy - mergekit|| / ||mergekit|| <= 1e-5 per tensor in fp32. For the bf16 model mergekit is run
with `dtype: float32, out_dtype: bfloat16` (compute in fp32, store bf16), as Alloy always does, and
the outputs may differ by one rounding: at most 1 bf16 ulp on >= 99.9% of elements and a relative
L2 error <= 4e-3 per tensor.

DARE is compared at density 1 only: mergekit rescales by L1-norm matching, Alloy by the paper's
1/p, so the two agree only when nothing is dropped.

TIES keeps the k largest |delta| of a tensor. When several equal magnitudes straddle the cut, which
of them survive depends on the sort (mergekit: argsort order; Alloy: lowest index first), and both
are right. The fp32 fixtures have no such ties (checked below); the bf16 ones, whose deltas are a few
ulps, have many, and those elements are left out of the bf16 TIES comparison.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from checkpoints import ModelSet, load_state_dict

pytestmark = pytest.mark.parity

Config = dict[str, Any]
Weights = dict[str, torch.Tensor]

FP32_REL_TOL = 1e-5
BF16_REL_TOL = 4e-3
BF16_WITHIN_ONE_ULP = 0.999
SEED = 1234


# ---------------------------------------------------------------------------------------------
# Running both tools


def run_mergekit(config: Config, out: Path) -> Path:
    """mergekit 0.1.5 in-process, CPU, defaults except: no tokenizer copy, quiet, seeded."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(copy_tokenizer=False, quiet=True, random_seed=SEED, device="cpu")
    run_merge(MergeConfiguration.model_validate(config), str(out), options=options)
    return out


def run_alloy(config: Config | Path, out: Path) -> Path:
    import alloy

    alloy.merge(
        str(config) if isinstance(config, Path) else config,
        out,
        random_seed=SEED,
        copy_tokenizer=False,
    )
    return out


def merge_both(
    tmp_path: Path, config: Config, alloy_config: Config | None = None
) -> tuple[Weights, Weights]:
    """Run mergekit on `config` and Alloy on `alloy_config` (default: the same config, given
    to Alloy as a YAML file); return the two state dicts (alloy, mergekit)."""
    theirs = run_mergekit(config, tmp_path / "mergekit")
    yaml_file = tmp_path / "config.yml"
    yaml_file.write_text(yaml.safe_dump(alloy_config or config, sort_keys=False))
    ours = run_alloy(yaml_file, tmp_path / "alloy")
    return load_state_dict(ours), load_state_dict(theirs)


# ---------------------------------------------------------------------------------------------
# Comparing outputs


def _same_layout(ours: Weights, theirs: Weights) -> None:
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    assert not missing and not extra, f"tensor names differ: missing {missing}, extra {extra}"
    shapes = {
        n: (tuple(ours[n].shape), tuple(theirs[n].shape))
        for n in theirs
        if ours[n].shape != theirs[n].shape
    }
    assert not shapes, f"shapes differ (alloy, mergekit): {shapes}"
    dtypes = {
        n: (ours[n].dtype, theirs[n].dtype) for n in theirs if ours[n].dtype != theirs[n].dtype
    }
    assert not dtypes, f"dtypes differ (alloy, mergekit): {dtypes}"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).norm() / max(float(b64.norm()), 1e-30))


def assert_fp32_parity(ours: Weights, theirs: Weights) -> None:
    _same_layout(ours, theirs)
    errors = {n: rel_err(ours[n], theirs[n]) for n in sorted(theirs)}
    bad = {n: f"{e:.3g}" for n, e in errors.items() if not e <= FP32_REL_TOL}
    assert not bad, f"{len(bad)}/{len(errors)} tensors off by more than {FP32_REL_TOL}: {bad}"


def bf16_ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of bf16 values between a and b (elementwise), via the ordered integer encoding."""

    def ordered(x: torch.Tensor) -> torch.Tensor:
        bits = x.contiguous().view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, -32768 - bits, bits)  # sign-magnitude -> monotonic

    return (ordered(a) - ordered(b)).abs()


def assert_bf16_parity(
    ours: Weights,
    theirs: Weights,
    exclude: dict[str, torch.Tensor] | None = None,
) -> None:
    """`exclude`: per tensor, a bool mask of elements whose value is not defined uniquely
    (a magnitude tie at TIES's top-k cut); they are left out of the comparison."""
    _same_layout(ours, theirs)
    total = within = 0
    bad: dict[str, str] = {}
    for n in sorted(theirs):
        a, b = ours[n], theirs[n]
        assert b.dtype == torch.bfloat16, f"{n}: mergekit wrote {b.dtype}, expected bfloat16"
        keep = torch.ones(b.shape, dtype=torch.bool)
        if exclude and n in exclude:
            keep = ~exclude[n]
        ulps = bf16_ulp_distance(a, b)[keep]
        total += ulps.numel()
        within += int((ulps <= 1).sum())
        e = rel_err(a.float()[keep], b.float()[keep])
        if not e <= BF16_REL_TOL:
            bad[n] = f"rel {e:.3g}, max {int(ulps.max())} ulp"
    assert not bad, f"{len(bad)} tensors off by more than {BF16_REL_TOL}: {bad}"
    frac = within / total
    assert frac >= BF16_WITHIN_ONE_ULP, f"only {frac:.5f} of elements within 1 bf16 ulp"


def ties_tie_mask(models: ModelSet, names: list[str], density: float) -> dict[str, torch.Tensor]:
    """Elements whose TIES trim is ambiguous: |delta| equal to the k-th largest |delta| of the
    tensor when that value straddles the cut (mergekit keeps the argsort's first k; another
    order is as right). In bf16 fine-tunes, deltas are a few ulps and such ties are common."""
    base = load_state_dict(models.base)
    tvs = [load_state_dict(m) for m in (models.ft1, models.ft2)]
    out: dict[str, torch.Tensor] = {}
    for n in names:
        if n not in base:
            continue
        mask = torch.zeros(base[n].shape, dtype=torch.bool)
        for tv in tvs:
            mag = (tv[n].float() - base[n].float()).abs()
            k = max(1, int(density * mag.numel()))
            if density >= 1:
                continue
            thr = torch.sort(mag.flatten(), descending=True).values[k - 1]
            above, at_least = int((mag > thr).sum()), int((mag >= thr).sum())
            if thr > 0 and above < k < at_least:
                mask |= mag == thr
        out[n] = mask
    return out


# ---------------------------------------------------------------------------------------------
# Configs (mergekit YAML schema, as dicts of plain values)


def linear(m: ModelSet) -> Config:
    return {
        "merge_method": "linear",
        "models": [
            {"model": str(m.ft1), "parameters": {"weight": 0.6}},
            {"model": str(m.ft2), "parameters": {"weight": 0.4}},
        ],
    }


def linear_unnormalized(m: ModelSet) -> Config:
    return {
        "merge_method": "linear",
        "models": [
            {"model": str(m.ft1), "parameters": {"weight": 0.7}},
            {"model": str(m.ft2), "parameters": {"weight": 0.5}},
        ],
        "parameters": {"normalize": False},
    }


def slerp(m: ModelSet) -> Config:
    return {
        "merge_method": "slerp",
        "base_model": str(m.ft1),
        "models": [{"model": str(m.ft1)}, {"model": str(m.ft2)}],
        "parameters": {"t": 0.3},
    }


def slerp_gradient(m: ModelSet) -> Config:
    return {
        "merge_method": "slerp",
        "base_model": str(m.ft1),
        "models": [{"model": str(m.ft1)}, {"model": str(m.ft2)}],
        "parameters": {"t": [0.0, 0.5, 1.0]},
    }


def slerp_filtered(m: ModelSet) -> Config:
    return {
        "merge_method": "slerp",
        "base_model": str(m.ft1),
        "slices": [
            {
                "sources": [
                    {"model": str(m.ft1), "layer_range": [0, 4]},
                    {"model": str(m.ft2), "layer_range": [0, 4]},
                ]
            }
        ],
        "parameters": {
            "t": [
                {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                {"value": 0.5},
            ]
        },
    }


def task_arithmetic(m: ModelSet) -> Config:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.ft1), "parameters": {"weight": 1.0}},
            {"model": str(m.ft2), "parameters": {"weight": 0.5}},
        ],
        "parameters": {"lambda": 0.8},
    }


def ties(m: ModelSet) -> Config:
    return {
        "merge_method": "ties",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.ft1), "parameters": {"weight": 0.6}},
            {"model": str(m.ft2), "parameters": {"weight": 0.4}},
        ],
        "parameters": {"density": 0.5},
    }


def ties_per_model_density(m: ModelSet) -> Config:
    return {
        "merge_method": "ties",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.ft1), "parameters": {"density": 0.5, "weight": 1.0}},
            {"model": str(m.ft2), "parameters": {"density": 0.3, "weight": 0.5}},
        ],
    }


def ties_density_gradient(m: ModelSet) -> Config:
    return {
        "merge_method": "ties",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.ft1), "parameters": {"density": [1.0, 0.7, 0.3], "weight": 0.6}},
            {"model": str(m.ft2), "parameters": {"density": [0.2, 0.5, 0.9], "weight": 0.4}},
        ],
    }


def dare_ties_density_1(m: ModelSet) -> Config:
    return {
        "merge_method": "dare_ties",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.ft1), "parameters": {"weight": 0.6, "density": 1.0}},
            {"model": str(m.ft2), "parameters": {"weight": 0.4, "density": 1.0}},
        ],
    }


def dare_linear_density_1(m: ModelSet) -> Config:
    return {
        "merge_method": "dare_linear",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.ft1), "parameters": {"weight": 0.6, "density": 1.0}},
            {"model": str(m.ft2), "parameters": {"weight": 0.4, "density": 1.0}},
        ],
    }


def passthrough_scaled(m: ModelSet) -> Config:
    return {
        "merge_method": "passthrough",
        "models": [
            {
                "model": str(m.ft1),
                "parameters": {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]},
            }
        ],
    }


def frankenmerge(m: ModelSet) -> Config:
    return {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(m.ft1), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(m.ft2), "layer_range": [1, 4]}]},
        ],
    }


def slices_linear(m: ModelSet) -> Config:
    """Per-slice parameters (slice level, source level overriding it, a gradient that restarts
    in each slice) and per-slice base_model."""
    return {
        "merge_method": "linear",
        "slices": [
            {
                "sources": [
                    {"model": str(m.ft1), "layer_range": [0, 2], "parameters": {"weight": 0.8}},
                    {"model": str(m.ft2), "layer_range": [0, 2]},
                ],
                "base_model": str(m.ft1),
                "parameters": {"weight": 0.2},
            },
            {
                "sources": [
                    {"model": str(m.ft1), "layer_range": [2, 4]},
                    {"model": str(m.ft2), "layer_range": [2, 4], "parameters": {"weight": 0.5}},
                ],
                "base_model": str(m.ft2),
                "parameters": {"weight": [0.1, 0.9]},
            },
        ],
        "parameters": {"normalize": True},
    }


def slices_task_arithmetic(m: ModelSet) -> Config:
    """Per-slice base_model that matters: slice 1 subtracts `base`, slice 2 subtracts `ft1`."""
    return {
        "merge_method": "task_arithmetic",
        "slices": [
            {
                "sources": [
                    {"model": str(m.base), "layer_range": [0, 2]},
                    {"model": str(m.ft1), "layer_range": [0, 2], "parameters": {"weight": 0.7}},
                    {"model": str(m.ft2), "layer_range": [0, 2], "parameters": {"weight": 0.3}},
                ],
                "base_model": str(m.base),
            },
            {
                "sources": [
                    {"model": str(m.ft1), "layer_range": [2, 4]},
                    {"model": str(m.ft2), "layer_range": [2, 4], "parameters": {"weight": 0.5}},
                ],
                "base_model": str(m.ft1),
            },
        ],
    }


LLAMA_CONFIGS: dict[str, Callable[[ModelSet], Config]] = {
    "linear": linear,
    "linear_unnormalized": linear_unnormalized,
    "slerp": slerp,
    "slerp_gradient": slerp_gradient,
    "slerp_filtered": slerp_filtered,
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "ties_per_model_density": ties_per_model_density,
    "ties_density_gradient": ties_density_gradient,
    "dare_ties_density_1": dare_ties_density_1,
    "dare_linear_density_1": dare_linear_density_1,
    "passthrough_scaled": passthrough_scaled,
    "frankenmerge": frankenmerge,
    "slices_linear": slices_linear,
    "slices_task_arithmetic": slices_task_arithmetic,
}

QWEN2_CONFIGS: dict[str, Callable[[ModelSet], Config]] = {
    "linear": linear,
    "slerp": slerp,
    "ties": ties,
    "task_arithmetic": task_arithmetic,
}


# ---------------------------------------------------------------------------------------------
# Tests


def test_oracle_is_mergekit_0_1_5() -> None:
    assert importlib.metadata.version("mergekit") == "0.1.5"


@pytest.mark.parametrize("name", list(LLAMA_CONFIGS))
def test_llama_fp32_parity(name: str, llama_models: ModelSet, tmp_path: Path) -> None:
    config = LLAMA_CONFIGS[name](llama_models)
    ours, theirs = merge_both(tmp_path, config)
    assert_fp32_parity(ours, theirs)


@pytest.mark.parametrize("name", list(QWEN2_CONFIGS))
def test_qwen2_bf16_parity(name: str, qwen2_models: ModelSet, tmp_path: Path) -> None:
    config = QWEN2_CONFIGS[name](qwen2_models)
    theirs_config = {**config, "dtype": "float32", "out_dtype": "bfloat16"}
    ours_config = {**config, "dtype": "bfloat16"}
    ours, theirs = merge_both(tmp_path, theirs_config, ours_config)
    exclude = None
    if config["merge_method"] == "ties":
        exclude = ties_tie_mask(qwen2_models, sorted(theirs), config["parameters"]["density"])
    assert_bf16_parity(ours, theirs, exclude)


def test_qwen2_output_stays_tied(qwen2_models: ModelSet, tmp_path: Path) -> None:
    config = {**linear(qwen2_models), "dtype": "bfloat16"}
    out = run_alloy(config, tmp_path / "alloy")
    names = set(load_state_dict(out))
    assert "model.embed_tokens.weight" in names
    assert "lm_head.weight" not in names
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True


def test_alloy_accepts_a_dict_config(llama_models: ModelSet, tmp_path: Path) -> None:
    """The parity tests hand Alloy YAML files; the same config as a dict gives the same bytes."""
    config = ties(llama_models)
    from_dict = load_state_dict(run_alloy(config, tmp_path / "from_dict"))
    yaml_file = tmp_path / "c.yml"
    yaml_file.write_text(yaml.safe_dump(config))
    from_yaml = load_state_dict(run_alloy(yaml_file, tmp_path / "from_yaml"))
    assert sorted(from_dict) == sorted(from_yaml)
    for n in from_yaml:
        assert torch.equal(from_dict[n], from_yaml[n]), n


def test_frankenmerge_layer_count(llama_models: ModelSet, tmp_path: Path) -> None:
    config = frankenmerge(llama_models)
    theirs = run_mergekit(config, tmp_path / "mergekit")
    ours = run_alloy(config, tmp_path / "alloy")
    for out in (theirs, ours):
        assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6, out.name
        layers = {
            int(n.split(".")[2]) for n in load_state_dict(out) if n.startswith("model.layers.")
        }
        assert layers == set(range(6)), out.name
    # Layer 3 of the output is layer 1 of ft2 (the second slice starts there).
    src = load_state_dict(llama_models.ft2)
    got = load_state_dict(ours)
    name = "self_attn.q_proj.weight"
    assert torch.equal(got[f"model.layers.3.{name}"], src[f"model.layers.1.{name}"])


def test_mergekit_frankenmerge_keeps_stale_layer_types(
    qwen2_models: ModelSet, tmp_path: Path
) -> None:
    """Oracle limit, not a parity case: mergekit 0.1.5 sets num_hidden_layers of a qwen2
    frankenmerge but leaves `layer_types` at the source's length, which transformers 5 rejects
    when saving the config. Alloy's qwen2 frankenmerge is checked in test_transformers_load."""
    from huggingface_hub.errors import StrictDataclassClassValidationError

    with pytest.raises(StrictDataclassClassValidationError, match="layer_types"):
        run_mergekit({**frankenmerge(qwen2_models), "dtype": "bfloat16"}, tmp_path / "mk")


def test_llama_fixture_has_no_magnitude_ties(llama_models: ModelSet) -> None:
    """Precondition of the fp32 TIES parity: no two nonzero |delta| of a tensor are equal, so
    the top-k cut does not depend on a sort's tie order."""
    base = load_state_dict(llama_models.base)
    for ft in (llama_models.ft1, llama_models.ft2):
        tv = load_state_dict(ft)
        for n, w in base.items():
            mag = (tv[n] - w).abs().flatten()
            mag = mag[mag > 0]
            assert mag.unique().numel() == mag.numel(), f"{ft.name}: {n} has tied magnitudes"
