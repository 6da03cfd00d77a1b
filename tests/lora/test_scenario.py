"""The motivating scenario: a persona adapter and a tool-calling adapter, trained on one base,
merged with TIES into one model and into one adapter.

Oracle: mergekit 0.1.5 running the same YAML, which applies each adapter with PEFT's
`merge_and_unload` into its `--lora-merge-cache` and TIES-merges the results. Alloy needs no cache
and writes nothing but its output. Both of Alloy's outputs load with transformers / PEFT and give
the logits of the model holding mergekit's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from adapters import load_causal_lm, logits, make_adapter, max_errors, peft_merged, peft_model
from checkpoints import ModelSet, load_state_dict

import alloy
from alloy.lora.merge import merge_adapters

pytestmark = pytest.mark.parity

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")


@dataclass
class Scenario:
    base: Path
    persona: Path
    tools: Path
    config: Path
    reference: dict[str, torch.Tensor]  # mergekit's merged weights


@pytest.fixture(scope="module")
def scenario(llama_models: ModelSet, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    root = tmp_path_factory.mktemp("scenario")
    base = llama_models.base
    persona = make_adapter(
        base, root / "persona", seed=21, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    tools = make_adapter(
        base,
        root / "tools",
        seed=22,
        r=8,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
    )
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": f"{base}+{persona}", "parameters": {"weight": 0.6, "density": 0.5}},
            {"model": f"{base}+{tools}", "parameters": {"weight": 0.4, "density": 0.5}},
        ],
        "dtype": "float32",
    }
    yml = root / "ties.yml"
    yml.write_text(yaml.safe_dump(config, sort_keys=False))
    options = MergeOptions(
        copy_tokenizer=False, quiet=True, device="cpu", lora_merge_cache=str(root / "cache")
    )
    run_merge(MergeConfiguration.model_validate(config), str(root / "mergekit"), options=options)
    return Scenario(base, persona, tools, yml, load_state_dict(root / "mergekit"))


def test_into_one_model(scenario: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "work" / "merged"
    alloy.merge(scenario.config, out, copy_tokenizer=False)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["merged"]  # no cache
    assert f"+ adapter {scenario.persona}" in (out / "alloy_config.yml").read_text()

    got = load_state_dict(out)
    assert sorted(got) == sorted(scenario.reference)
    _, rel = max_errors(got, scenario.reference)
    assert rel <= 1e-5
    base = load_state_dict(scenario.base)
    changed = {n.split(".")[-2] for n in got if not torch.equal(got[n], base[n])}
    assert changed == set(MODULES)

    want = logits(reference_model(scenario.base, scenario.reference))
    torch.testing.assert_close(logits(load_causal_lm(out)), want, atol=1e-5, rtol=1e-5)


def test_into_one_adapter(scenario: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = merge_adapters(scenario.config, out, rank=32)  # ≥ every module's dimensions
    assert {m.name.split(".")[-1] for m in result.modules} == set(MODULES)
    assert all(m.relative_error < 1e-5 for m in result.modules)

    model = peft_model(scenario.base, out)
    want = logits(reference_model(scenario.base, scenario.reference))
    torch.testing.assert_close(logits(model), want, atol=1e-5, rtol=1e-5)
    _, rel = max_errors(peft_merged(scenario.base, out), scenario.reference)
    assert rel <= 1e-5


@pytest.mark.parametrize("keep", [{"rank": 4}, {"energy": 0.9}, {"rank": 6, "energy": 0.95}])
def test_truncated_adapter_loses_exactly_the_dropped_spectrum(
    keep: dict, scenario: Scenario, tmp_path: Path
) -> None:
    result = merge_adapters(scenario.config, tmp_path / "adapter", **keep)
    applied = peft_merged(scenario.base, tmp_path / "adapter")
    base = load_state_dict(scenario.base)
    for m in result.modules:
        name = m.name + ".weight"
        delta = scenario.reference[name] - base[name]  # the merged delta, from mergekit
        s2 = torch.linalg.svdvals(delta.double()) ** 2
        share = torch.cumsum(s2, 0) / s2.sum()
        rank = keep.get("rank", len(s2))
        if "energy" in keep:  # the fewest singular values keeping that share
            rank = min(rank, int((share < keep["energy"] - 1e-12).sum()) + 1)
        assert m.rank == rank, m.name
        dropped = float((s2[rank:].sum() / s2.sum()).sqrt())
        assert m.relative_error == pytest.approx(dropped, rel=1e-3, abs=1e-6)
        error = float((applied[name] - base[name] - delta).norm() / delta.norm())
        assert error == pytest.approx(dropped, rel=1e-3, abs=1e-5), m.name
        assert m.energy == pytest.approx(float(share[rank - 1]), abs=1e-6)


def reference_model(base: Path, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The base architecture holding `weights`, loaded without Alloy."""
    model = load_causal_lm(base)
    model.load_state_dict(weights, strict=True)
    return model.eval()
