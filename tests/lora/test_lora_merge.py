"""`alloy lora merge`: several PEFT adapters into one, on the full per-module deltas.

Expected deltas come from PEFT: ``peft_merged(base, adapter) − base`` is each adapter's ΔW_i;
the merged adapter is loaded back with `PeftModel.from_pretrained` and applied the same way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from adapters import Weights, make_adapter, max_errors, peft_merged
from checkpoints import MakeModel, ModelSet, load_state_dict
from click.testing import CliRunner

import alloy
from alloy.cli import main
from alloy.errors import AlloyError, ConfigError, IncompatibleModelsError, LoraNotSupportedError
from alloy.lora.merge import lora_merge_config, merge_adapters

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def pair(llama_models: ModelSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two adapters on one base with different ranks, targets, scalings; one has an embedding
    LoRA and a trained lm_head (modules_to_save)."""
    root = tmp_path_factory.mktemp("pair")
    a = make_adapter(
        llama_models.base,
        root / "a",
        seed=31,
        target_modules=["q_proj", "v_proj", "embed_tokens"],
        modules_to_save=["lm_head"],
    )
    b = make_adapter(
        llama_models.base,
        root / "b",
        seed=32,
        r=2,
        lora_alpha=6,
        use_rslora=True,
        target_modules=["q_proj", "o_proj", "up_proj"],
    )
    return a, b


def deltas(base: Path, adapter: Path) -> Weights:
    merged, original = peft_merged(base, adapter), load_state_dict(base)
    return {n: merged[n] - original[n] for n in original}


def test_cat_is_exact_and_ranks_add_up(
    llama_models: ModelSet, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = pair
    config = lora_merge_config([(str(a), 0.7), (str(b), -0.3)], "cat")
    result = merge_adapters(config, tmp_path / "cat")
    ranks = {m.name: m.rank for m in result.modules}
    assert ranks["model.layers.0.self_attn.q_proj"] == 4 + 2
    assert ranks["model.layers.0.self_attn.v_proj"] == 4
    assert ranks["model.layers.0.mlp.up_proj"] == 2
    assert all(m.energy == 1.0 for m in result.modules)

    cfg = json.loads((tmp_path / "cat" / "adapter_config.json").read_text())
    assert cfg["r"] == 6 and cfg["lora_alpha"] == 6
    assert cfg["rank_pattern"]["model.layers.0.mlp.up_proj"] == 2
    assert cfg["modules_to_save"] == ["lm_head"]

    da, db = deltas(llama_models.base, a), deltas(llama_models.base, b)
    got = deltas(llama_models.base, tmp_path / "cat")
    want = {n: 0.7 * da[n] - 0.3 * db[n] for n in da if n != "lm_head.weight"}
    _, rel = max_errors(got, want)
    assert rel <= 1e-5
    # the trained head of `a` is carried over whole (modules_to_save is a replacement)
    torch.testing.assert_close(got["lm_head.weight"], da["lm_head.weight"])


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("linear", {}, lambda da, db: (0.7 * da + 0.3 * db) / 1.0),
        ("task_arithmetic", {"lambda": 0.5}, lambda da, db: 0.5 * (0.7 * da + 0.3 * db)),
    ],
)
def test_linear_methods_at_full_rank_are_the_weighted_deltas(
    method: str,
    params: dict,
    expected: object,
    llama_models: ModelSet,
    pair: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    a, b = pair
    config = lora_merge_config([(str(a), 0.7), (str(b), 0.3)], method, lambda_=params.get("lambda"))
    merge_adapters(config, tmp_path / "out", rank=64)
    da, db = deltas(llama_models.base, a), deltas(llama_models.base, b)
    got = deltas(llama_models.base, tmp_path / "out")
    want = {n: expected(da[n], db[n]) for n in da if n != "lm_head.weight"}  # type: ignore[operator]
    _, rel = max_errors(got, want)
    assert rel <= 1e-5


@pytest.mark.parametrize("method", ["ties", "dare_ties", "dare_linear"])
def test_adapter_merge_equals_model_merge(
    method: str, llama_models: ModelSet, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """One config, two outputs: the merged adapter on the base is the merged model."""
    a, b = pair
    base = llama_models.base
    config = {
        "merge_method": method,
        "base_model": str(base),
        "models": [
            {"model": f"{base}+{a}", "parameters": {"weight": 0.6, "density": 0.5}},
            {"model": f"{base}+{b}", "parameters": {"weight": 0.4, "density": 0.7}},
        ],
        "parameters": {"lambda": 0.9},
        "dtype": "float32",
    }
    alloy.merge(config, tmp_path / "model", copy_tokenizer=False, random_seed=5)
    merge_adapters(config, tmp_path / "adapter", rank=64, seed=5)
    model = load_state_dict(tmp_path / "model")
    via_adapter = peft_merged(base, tmp_path / "adapter")
    _, rel = max_errors(via_adapter, {n: t for n, t in model.items() if n != "lm_head.weight"})
    assert rel <= 1e-5


def test_gpt2_conv1d_and_lora_bias_adapters(make_model: MakeModel, tmp_path: Path) -> None:
    base = make_model("gpt2", tmp_path / "base", seed=0)
    common = {"target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True, "lora_bias": True}
    a = make_adapter(base, tmp_path / "a", seed=41, **common)
    b = make_adapter(base, tmp_path / "b", seed=42, r=2, **common)
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 1.0, "density": 0.6}},
            {"model": str(b), "parameters": {"weight": 1.0, "density": 0.6}},
        ],
    }
    alloy.merge(config, tmp_path / "model", copy_tokenizer=False)
    merge_adapters(config, tmp_path / "adapter", rank=64)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["fan_in_fan_out"] is True and cfg["lora_bias"] is True
    model = load_state_dict(tmp_path / "model")
    _, rel = max_errors(peft_merged(base, tmp_path / "adapter"), model)
    assert rel <= 1e-5
    assert any(
        "c_attn.bias" in n and not torch.equal(model[n], load_state_dict(base)[n]) for n in model
    )


def test_adapters_on_different_bases_are_refused(
    pair: tuple[Path, Path], llama_models: ModelSet, tmp_path: Path
) -> None:
    other = shutil.copytree(pair[1], tmp_path / "other")
    cfg = json.loads((other / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "org/another-model"
    (other / "adapter_config.json").write_text(json.dumps(cfg))
    config = lora_merge_config([(str(pair[0]), 1.0), (str(other), 1.0)], "cat")
    with pytest.raises(
        IncompatibleModelsError, match=r"base_model_name_or_path.*org/another-model"
    ):
        merge_adapters(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    merge_adapters(config, tmp_path / "out", allow_different_bases=True)
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_bad_inputs_are_clear_errors(
    llama_models: ModelSet, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = pair
    with pytest.raises(ConfigError, match="supports cat, linear"):
        merge_adapters(
            lora_merge_config([(str(a), 1.0)], "linear") | {"merge_method": "slerp"}, tmp_path / "o"
        )
    with pytest.raises(AlloyError, match="--rank R or --energy E"):
        merge_adapters(lora_merge_config([(str(a), 1.0), (str(b), 1.0)], "ties"), tmp_path / "o")
    bad = lora_merge_config([(str(a), 1.0), (str(b), 1.0)], "ties")
    bad["models"][1]["parameters"]["density"] = "most"
    with pytest.raises(ConfigError, match="parameter 'density'") as e:
        merge_adapters(bad, tmp_path / "o", rank=4)
    assert len(e.value.issues) == 1  # one error, not one per module
    assert not (tmp_path / "o").exists()
    with pytest.raises(AlloyError, match="not a LoRA adapter directory"):
        merge_adapters(lora_merge_config([(str(llama_models.ft1), 1.0)], "cat"), tmp_path / "o")
    twice = lora_merge_config([(str(a), 1.0), (str(a), 1.0)], "cat")
    with pytest.raises(IncompatibleModelsError, match="lm_head.*both"):
        merge_adapters(twice, tmp_path / "o")
    dora = make_adapter(
        llama_models.base, tmp_path / "dora", seed=1, target_modules=["q_proj"], use_dora=True
    )
    with pytest.raises(LoraNotSupportedError, match="DoRA"):
        merge_adapters(lora_merge_config([(str(dora), 1.0)], "cat"), tmp_path / "o")
    biased = make_adapter(
        llama_models.base, tmp_path / "biased", seed=2, target_modules=["q_proj"], bias="all"
    )
    with pytest.raises(AlloyError, match="bias='all'"):
        merge_adapters(lora_merge_config([(str(biased), 1.0)], "cat"), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_paths_with_weights_and_yaml_config(
    llama_models: ModelSet, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = pair
    runner = CliRunner()
    res = runner.invoke(
        main, ["lora", "merge", f"{a}:0.7", f"{b}:-0.3", str(tmp_path / "cli"), "--method", "cat"]
    )
    assert res.exit_code == 0, res.output
    assert "model.layers.0.self_attn.q_proj" in res.output and "4+2" in res.output

    yml = tmp_path / "cat.yml"
    yml.write_text(
        yaml.safe_dump(
            {
                "merge_method": "cat",
                "models": [
                    {"model": str(a), "parameters": {"weight": 0.7}},
                    {"model": str(b), "parameters": {"weight": -0.3}},
                ],
            }
        )
    )
    res = runner.invoke(main, ["lora", "merge", str(yml), str(tmp_path / "yml")])
    assert res.exit_code == 0, res.output
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        assert (tmp_path / "cli" / f).read_bytes() == (tmp_path / "yml" / f).read_bytes()

    res = runner.invoke(
        main, ["lora", "merge", f"{a}", f"{b}", str(tmp_path / "t"), "--density", "0.5"]
    )
    assert res.exit_code == 1 and "--rank R or --energy E" in res.output
    res = runner.invoke(
        main,
        [
            "lora",
            "merge",
            f"{a}",
            f"{b}",
            str(tmp_path / "t"),
            "--density",
            "0.5",
            "--energy",
            "0.8",
        ],
    )
    assert res.exit_code == 0, res.output
    energies = [float(x) for x in _column(res.output, "energy kept")]
    assert energies and min(energies) >= 0.8
    assert peft_merged(llama_models.base, tmp_path / "t")  # PEFT loads it


def _column(table: str, header: str) -> list[str]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    rows = [r for r in rows if len(r) > 1 and not set(r[0]) <= {"-"}]
    i = rows[0].index(header)
    return [r[i] for r in rows[1:]]
