"""LoRA adapters as merge inputs: `base+adapter` and bare adapter directories, applied per tensor.

The oracle is PEFT itself: `PeftModel.from_pretrained(base, adapter).merge_and_unload()`. Every
adapter here is a real PEFT adapter (get_peft_model, seeded non-zero factors, save_pretrained).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from adapters import Weights, load_causal_lm, make_adapter, max_errors, peft_merged
from checkpoints import MakeModel, ModelSet, load_state_dict

import alloy
from alloy.arch.infer import is_output_embedding, known
from alloy.errors import (
    CheckpointError,
    ConfigError,
    IncompatibleModelsError,
    LoraNotSupportedError,
    ModelNotFoundError,
    OutputError,
)
from alloy.io.lora.adapter import open_adapter, pattern_key
from alloy.io.lora.source import LoraSource
from alloy.plan import executor

pytestmark = pytest.mark.parity

REL_TOL = 1e-6  # fp32: PEFT adds B@A·s to W in place, Alloy computes W + s·B@A

LLAMA_CASES: dict[str, dict] = {
    "plain": {"target_modules": ["q_proj", "v_proj"]},
    "rslora": {"target_modules": "all-linear", "use_rslora": True, "r": 6, "lora_alpha": 12},
    "patterns": {
        "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"],
        "rank_pattern": {"layers.1.self_attn.q_proj": 2, "down_proj": 6},
        "alpha_pattern": {"v_proj": 3, r"model\.layers\.[23]\.mlp\.up_proj": 16},
    },
    "embedding+modules_to_save": {
        "target_modules": ["embed_tokens", "q_proj"],
        "modules_to_save": ["lm_head"],
    },
    "bin": {"target_modules": ["k_proj", "o_proj", "gate_proj"], "fmt": "bin"},
}
GPT2_CASES: dict[str, dict] = {
    # c_attn [32, 96], attn.c_proj [32, 32] (square: fan_in_fan_out decides), mlp.c_proj [128, 32]
    "conv1d+lora_bias": {
        "target_modules": ["c_attn", "c_proj", "c_fc"],
        "fan_in_fan_out": True,
        "lora_bias": True,
    },
    "tied-embedding": {"target_modules": ["wte", "c_attn"], "fan_in_fan_out": True},
}


@pytest.fixture(scope="module")
def gpt2_base(make_model: MakeModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model("gpt2", tmp_path_factory.mktemp("gpt2") / "base", seed=0)


@pytest.fixture(scope="module")
def llama_adapters(
    llama_models: ModelSet, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llama-adapters")
    return {
        case: make_adapter(llama_models.base, root / case.replace("+", "_"), seed=i, **cfg)
        for i, (case, cfg) in enumerate(LLAMA_CASES.items())
    }


@pytest.fixture(scope="module")
def gpt2_adapters(gpt2_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpt2-adapters")
    return {
        case: make_adapter(gpt2_base, root / case.replace("+", "_"), seed=10 + i, **cfg)
        for i, (case, cfg) in enumerate(GPT2_CASES.items())
    }


def apply_with_alloy(model: str, out: Path, **kwargs: object) -> Weights:
    config = {"merge_method": "linear", "models": [{"model": model, "parameters": {"weight": 1.0}}]}
    alloy.merge(config, out, copy_tokenizer=False, **kwargs)  # type: ignore[arg-type]
    return load_state_dict(out)


def check_against_peft(got: Weights, base: Path, adapter: Path) -> None:
    want = peft_merged(base, adapter)
    base_weights = load_state_dict(base)
    changed = [n for n in got if not torch.equal(got[n], base_weights.get(n, got[n]))]
    assert changed, "the adapter changed nothing: the test would prove nothing"
    assert set(got) <= set(want)
    abs_err, rel_err = max_errors(got, {n: want[n] for n in got})
    assert rel_err <= REL_TOL, f"max abs {abs_err:.2e}, max rel {rel_err:.2e}"


@pytest.mark.parametrize("case", list(LLAMA_CASES))
def test_llama_adapter_matches_peft_merge_and_unload(
    case: str, llama_models: ModelSet, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    adapter = llama_adapters[case]
    got = apply_with_alloy(f"{llama_models.base}+{adapter}", tmp_path / "out")
    check_against_peft(got, llama_models.base, adapter)
    if case == "bin":
        assert (adapter / "adapter_model.bin").is_file()
        assert not (adapter / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("case", list(GPT2_CASES))
def test_gpt2_adapter_matches_peft_merge_and_unload(
    case: str, gpt2_base: Path, gpt2_adapters: dict[str, Path], tmp_path: Path
) -> None:
    adapter = gpt2_adapters[case]
    got = apply_with_alloy(f"{gpt2_base}+{adapter}", tmp_path / "out")
    check_against_peft(got, gpt2_base, adapter)
    if case == "tied-embedding":  # the head stays tied to the adapted embedding
        assert "lm_head.weight" not in got
        assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"]


def test_bf16_base_is_adapted_in_float32_and_rounded_once(
    qwen2_models: ModelSet, tmp_path: Path
) -> None:
    """Qwen2, bf16, tied embeddings. PEFT adds a bf16-rounded delta to the bf16 weight (two
    roundings); Alloy rounds W + s·B@A once, as PEFT's merge in float32 then cast gives."""
    base = qwen2_models.base
    adapter = make_adapter(base, tmp_path / "a", seed=3, target_modules=["q_proj", "embed_tokens"])
    got = apply_with_alloy(f"{base}+{adapter}", tmp_path / "out")
    assert "lm_head.weight" not in got and got["model.embed_tokens.weight"].dtype == torch.bfloat16
    fp32 = peft_merged(base, adapter)  # the base's bf16 values, merged in float32
    for n, t in got.items():
        want = fp32[n].to(torch.bfloat16)
        assert float((t != want).float().mean()) <= 1e-3, n  # fp32 sums may round differently
        torch.testing.assert_close(t.float(), want.float(), rtol=8e-3, atol=1e-6)


def test_row_chunks_compute_only_their_rows(
    llama_models: ModelSet,
    llama_adapters: dict[str, Path],
    gpt2_base: Path,
    gpt2_adapters: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = [
        (llama_models.base, llama_adapters["embedding+modules_to_save"]),  # embedding: (B@A)ᵀ
        (gpt2_base, gpt2_adapters["conv1d+lora_bias"]),  # Conv1D: (B@A)ᵀ, and a bias
    ]
    for base, adapter in cases:
        whole = apply_with_alloy(f"{base}+{adapter}", tmp_path / f"whole-{adapter.name}")
        monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 200)  # a few rows per chunk
        chunked = apply_with_alloy(f"{base}+{adapter}", tmp_path / f"chunks-{adapter.name}")
        monkeypatch.undo()
        _, rel = max_errors(chunked, whole)
        assert rel <= 1e-6
        check_against_peft(chunked, base, adapter)

    source = LoraSource(
        open_weights_of(gpt2_base),
        open_adapter(gpt2_adapters["conv1d+lora_bias"]),
        model_prefixes=known().model_prefixes,
        is_output_embedding=is_output_embedding,
    )
    for name in source.adapted:
        full = source.get(name)
        rows = (1, min(3, full.shape[0]))
        torch.testing.assert_close(source.get(name, rows), full[rows[0] : rows[1]])
    source.close()


def open_weights_of(path: Path):  # type: ignore[no-untyped-def]
    from alloy.io.sources import open_weights

    return open_weights(path)


def test_mergekit_dict_form(
    llama_models: ModelSet, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    adapter = llama_adapters["rslora"]
    ref = {"model": {"path": str(llama_models.base)}, "lora": {"path": str(adapter)}}
    config = {"merge_method": "linear", "models": [{"model": ref, "parameters": {"weight": 1.0}}]}
    alloy.merge(config, tmp_path / "out", copy_tokenizer=False)
    check_against_peft(load_state_dict(tmp_path / "out"), llama_models.base, adapter)


def test_bare_adapter_directory_is_a_model(
    llama_models: ModelSet, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    adapter = llama_adapters["patterns"]
    assert json.loads((adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(llama_models.base)
    got = apply_with_alloy(str(adapter), tmp_path / "bare")
    check_against_peft(got, llama_models.base, adapter)


def test_adapter_and_its_base_from_the_hub_cache(
    llama_models: ModelSet,
    llama_adapters: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An adapter repo in the local HF cache naming its base by hub id, as published adapters do."""
    cache = tmp_path / "cache"
    for repo, src in (("org--base", llama_models.base), ("org--persona", llama_adapters["plain"])):
        shutil.copytree(src, cache / f"models--{repo}" / "snapshots" / "c0ffee")
        (cache / f"models--{repo}" / "refs").mkdir()
        (cache / f"models--{repo}" / "refs" / "main").write_text("c0ffee")
    cfg_file = cache / "models--org--persona" / "snapshots" / "c0ffee" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = "org/base"
    cfg_file.write_text(json.dumps(cfg))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = apply_with_alloy("org/persona", tmp_path / "bare")
    check_against_peft(got, llama_models.base, llama_adapters["plain"])
    assert apply_with_alloy("org/base+org/persona", tmp_path / "plus").keys() == got.keys()


def test_lora_base_overrides_the_adapters_base(
    llama_models: ModelSet, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    moved = shutil.copytree(llama_adapters["plain"], tmp_path / "adapter")
    cfg_file = moved / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "no-such-base")
    cfg_file.write_text(json.dumps(cfg))

    with pytest.raises(ModelNotFoundError, match=r"base_model_name_or_path.*--lora-base"):
        apply_with_alloy(str(moved), tmp_path / "fails")
    assert not (tmp_path / "fails").exists()

    got = apply_with_alloy(str(moved), tmp_path / "out", lora_base=str(llama_models.base))
    check_against_peft(got, llama_models.base, llama_adapters["plain"])

    with pytest.raises(ConfigError, match="no input is a bare LoRA adapter"):
        apply_with_alloy(str(llama_models.ft1), tmp_path / "x", lora_base=str(llama_models.base))

    from click.testing import CliRunner

    from alloy.cli import main

    yml = tmp_path / "apply.yml"
    yml.write_text(json.dumps({"merge_method": "passthrough", "models": [{"model": str(moved)}]}))
    args = ["merge", str(yml), str(tmp_path / "cli"), "--no-copy-tokenizer"]
    res = CliRunner().invoke(main, [*args, "--lora-base", str(llama_models.base)])
    assert res.exit_code == 0, res.output
    assert load_state_dict(tmp_path / "cli").keys() == got.keys()
    res = CliRunner().invoke(main, ["plan", str(yml), "--lora-base", str(llama_models.base)])
    assert res.exit_code == 0 and f"+ adapter {moved}" in res.output, res.output


def test_adapter_types_not_applied_are_named(llama_models: ModelSet, tmp_path: Path) -> None:
    import peft

    model = load_causal_lm(llama_models.base)
    configs = {
        "DoRA": peft.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True),
        "IA3": peft.IA3Config(
            target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]
        ),
        "LOHA": peft.LoHaConfig(r=2, target_modules=["q_proj"]),
    }
    for label, config in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft.get_peft_model(load_causal_lm(llama_models.base), config).save_pretrained(
                tmp_path / label
            )
        with pytest.raises(LoraNotSupportedError, match=label):
            apply_with_alloy(f"{llama_models.base}+{tmp_path / label}", tmp_path / f"o-{label}")
        assert not (tmp_path / f"o-{label}").exists()
    del model


def test_adapter_relative_to_a_residual_base_is_refused(
    llama_models: ModelSet, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    adapter = shutil.copytree(llama_adapters["plain"], tmp_path / "pissa")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["init_lora_weights"] = "pissa_niter_4"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoraNotSupportedError, match="path_initial_model_for_weight_conversion"):
        apply_with_alloy(f"{llama_models.base}+{adapter}", tmp_path / "out")


def test_adapter_config_and_weights_disagree(
    llama_models: ModelSet, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    adapter = shutil.copytree(llama_adapters["plain"], tmp_path / "bad")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["r"] = 8  # the factors have rank 4
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"q_proj.*rank r=8"):
        apply_with_alloy(f"{llama_models.base}+{adapter}", tmp_path / "out")


def test_adapter_of_another_model_is_refused(
    gpt2_base: Path, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(
        IncompatibleModelsError, match=r"(?s)q_proj.*no tensor.*base_model_name_or_path"
    ):
        apply_with_alloy(f"{gpt2_base}+{llama_adapters['plain']}", tmp_path / "out")


def test_output_never_goes_into_the_adapter(
    llama_models: ModelSet, llama_adapters: dict[str, Path]
) -> None:
    adapter = llama_adapters["plain"]
    with pytest.raises(OutputError, match="overlaps"):
        apply_with_alloy(f"{llama_models.base}+{adapter}", adapter / "merged")
    assert not (adapter / "merged").exists()


def test_pattern_keys_follow_peft() -> None:
    from peft.utils.other import get_pattern_key

    patterns = {"q_proj": 1, r"layers\.1\..*v_proj": 2, "model.layers.0.mlp.up_proj": 3}
    names = [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
        "model.layers.11.self_attn.v_proj",
        "model.layers.0.mlp.up_proj",
        "model.layers.10.mlp.up_proj",
        "model.layers.0.self_attn.xq_proj",
    ]
    for name in names:
        theirs = get_pattern_key(list(patterns), name)
        assert pattern_key(patterns, name) == (theirs if theirs in patterns else None), name


def test_plain_and_adapter_merges_import_neither_peft_nor_transformers(
    llama_models: ModelSet, llama_adapters: dict[str, Path], tmp_path: Path
) -> None:
    code = f"""
import sys, alloy
for i, model in enumerate([{str(llama_models.ft1)!r}, {f"{llama_models.base}+{llama_adapters['plain']}"!r}]):
    cfg = {{"merge_method": "linear", "models": [{{"model": model, "parameters": {{"weight": 1.0}}}}]}}
    alloy.merge(cfg, {str(tmp_path)!r} + f"/out{{i}}")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("peft", "transformers")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
