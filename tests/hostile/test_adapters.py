"""Hostile LoRA adapters: the numbers of adapter_config.json and the weights of `alloy lora
merge`, each a typed error naming the file and key, exit 1, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from .harness import Case, Scene, Table, run_case

cases = Table()
HIDDEN, R = 4, 2


def write_adapter(path: Path, base: Path, seed: int = 0, **config: Any) -> Path:
    """A plain LoRA adapter of the tiny scene model on every q_proj (written by hand)."""
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(3):
        key = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        tensors[key + ".lora_A.weight"] = torch.randn(R, HIDDEN, generator=g)
        tensors[key + ".lora_B.weight"] = torch.randn(HIDDEN, R, generator=g)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    cfg = {
        "peft_type": "LORA",
        "base_model_name_or_path": str(base),
        "r": R,
        "lora_alpha": 2 * R,
        "target_modules": ["q_proj"],
        **config,
    }
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def _config_case(name: str, says: str, **config: Any) -> None:
    def setup(s: Scene) -> Case:
        ad = write_adapter(s.root / "ad", s.a, **config)
        s.cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {s.a}+{ad}\n")
        return Case(s.merge_args(), 1, [str(ad / "adapter_config.json"), says])

    setup.__name__ = "adapter_" + name
    cases(setup)


for name, says, config in [
    ("rank_zero", "`r`", {"r": 0}),
    ("rank_negative", "`r`", {"r": -2}),
    ("rank_a_string", "`r`", {"r": "four"}),
    ("rank_a_float", "`r`", {"r": 2.5}),
    ("rank_a_bool", "`r`", {"r": True}),
    ("alpha_a_string", "`lora_alpha`", {"lora_alpha": "eight"}),
    ("alpha_nan", "`lora_alpha`", {"lora_alpha": float("nan")}),
    ("alpha_infinite", "`lora_alpha`", {"lora_alpha": float("inf")}),
    ("rank_pattern_a_list", "`rank_pattern`", {"rank_pattern": ["q_proj", 4]}),
    ("rank_pattern_value_zero", "`rank_pattern.q_proj`", {"rank_pattern": {"q_proj": 0}}),
    ("rank_pattern_value_string", "`rank_pattern.q_proj`", {"rank_pattern": {"q_proj": "2"}}),
    ("alpha_pattern_a_string", "`alpha_pattern`", {"alpha_pattern": "q_proj=4"}),
    (
        "alpha_pattern_value_nan",
        "`alpha_pattern.q_proj`",
        {"alpha_pattern": {"q_proj": float("nan")}},
    ),
]:
    _config_case(name, says, **config)


@cases
def adapter_config_not_json(s: Scene) -> Case:
    ad = write_adapter(s.root / "ad", s.a)
    (ad / "adapter_config.json").write_text("{peft_type: LORA")
    s.cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {s.a}+{ad}\n")
    return Case(s.merge_args(), 1, [str(ad / "adapter_config.json"), "not valid JSON"])


@cases
def adapter_config_is_a_fifo(s: Scene) -> Case:
    import os

    ad = write_adapter(s.root / "ad", s.a)
    (ad / "adapter_config.json").unlink()
    os.mkfifo(ad / "adapter_config.json")
    s.cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {s.a}+{ad}\n")
    return Case(s.merge_args(), 1, ["adapter_config.json"])


def _lora_merge_case(name: str, weight: str, method: str) -> None:
    def setup(s: Scene) -> Case:
        one = write_adapter(s.root / "ad1", s.a, seed=1)
        two = write_adapter(s.root / "ad2", s.a, seed=2)
        args = ["lora", "merge", f"{one}:{weight}", f"{two}:1", str(s.out), "-m", method]
        args += [] if method == "cat" else ["--rank", "2"]
        return Case(args, 1, ["weight"])

    setup.__name__ = f"lora_merge_{method}_weight_{name}"
    cases(setup)


for method in ("ties", "linear", "cat"):
    for name, weight in [("nan", "nan"), ("inf", "inf"), ("minus_inf", "-inf")]:
        _lora_merge_case(name, weight, method)


@pytest.mark.parametrize("setup", cases.params())
def test_adapter_case(tmp_path: Path, setup: object) -> None:
    run_case(Scene(tmp_path), setup)  # type: ignore[arg-type]
