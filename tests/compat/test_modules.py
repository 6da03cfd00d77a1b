"""``modules:``: a multi-module model (a tiny Qwen2-VL built from transformers' classes: a text
decoder, a vision tower and the projector between them), each module merged with its own
definition, against mergekit 0.1.5 and against the arithmetic itself; the output loads as a
Qwen2-VL. The stand-ins' config.json also carries ``num_hidden_layers`` at the top level, as
the published Qwen2-VL configs do (mergekit 0.1.5 reads the text decoder's layer count there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from checkpoints import load_state_dict
from compat.test_corpus import rel_err, run_alloy, run_mergekit

pytestmark = pytest.mark.parity

WEIGHTS = {
    "text_decoder": (0.7, 0.3),
    "vision_tower": (0.2, 0.9),
    "multi_modal_projector": (0.5, 0.5),
}


def _write(path: Path, seed: int) -> Path:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    text = {
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 0]},
        "tie_word_embeddings": False,
    }
    vision = {
        "depth": 2,
        "embed_dim": 16,
        "hidden_size": 16,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 2,
        "temporal_patch_size": 1,
        "spatial_merge_size": 1,
    }
    config = transformers.Qwen2VLConfig(
        text_config=text, vision_config=vision, vocab_size=64, tie_word_embeddings=False
    )
    torch.manual_seed(0)
    model = transformers.Qwen2VLForConditionalGeneration(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(path)
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["num_hidden_layers"] = text["num_hidden_layers"]
    cfg_file.write_text(json.dumps(cfg, indent=2))
    return path


@pytest.fixture(scope="module")
def vlms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("vlm")
    return [_write(root / f"m{i}", seed=i) for i in range(3)]


def _config(paths: list[Path], modules: list[str] | None = None) -> dict[str, Any]:
    base, a, b = (str(p) for p in paths)
    spec: dict[str, Any] = {
        "text_decoder": {
            "models": [
                {"model": a, "parameters": {"weight": WEIGHTS["text_decoder"][0]}},
                {"model": b, "parameters": {"weight": WEIGHTS["text_decoder"][1]}},
            ]
        },
        "vision_tower": {
            "models": [
                {"model": a, "parameters": {"weight": WEIGHTS["vision_tower"][0]}},
                {"model": b, "parameters": {"weight": WEIGHTS["vision_tower"][1]}},
            ]
        },
        "multi_modal_projector": {
            "models": [{"model": a}, {"model": b}],
            "parameters": {"weight": WEIGHTS["multi_modal_projector"][0]},
        },
    }
    chosen = {k: v for k, v in spec.items() if modules is None or k in modules}
    return {
        "merge_method": "task_arithmetic",
        "base_model": base,
        "modules": chosen,
        "dtype": "float32",
    }


def _module(name: str) -> str:
    if name.startswith("visual.merger."):
        return "multi_modal_projector"
    return "vision_tower" if name.startswith("visual.") else "text_decoder"


def test_each_module_merged_with_its_own_definition(vlms: list[Path], tmp_path: Path) -> None:
    text = yaml.safe_dump(_config(vlms))
    ours = load_state_dict(run_alloy(text, tmp_path / "alloy"))
    theirs = load_state_dict(run_mergekit(text, tmp_path / "mergekit"))
    assert sorted(ours) == sorted(theirs)
    assert max(rel_err(ours[n], theirs[n]) for n in theirs) <= 1e-5
    base, a, b = (load_state_dict(p) for p in vlms)
    seen = set()
    for n, got in ours.items():
        wa, wb = WEIGHTS[_module(n)]
        expected = base[n] + wa * (a[n] - base[n]) + wb * (b[n] - base[n])
        assert rel_err(got, expected) <= 1e-6, n
        seen.add(_module(n))
    assert seen == set(WEIGHTS)


def test_the_output_loads_as_the_multi_module_architecture(
    vlms: list[Path], tmp_path: Path
) -> None:
    import transformers

    out = run_alloy(yaml.safe_dump(_config(vlms)), tmp_path / "alloy")
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(out)
    merged = load_state_dict(out)
    loaded = model.state_dict()
    assert len(loaded) >= len(merged) - 1  # lm_head may be tied-free; every tensor is loaded
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 4, 64) and bool(torch.isfinite(logits).all())


def test_a_module_left_out_is_an_error_naming_its_tensors(vlms: list[Path], tmp_path: Path) -> None:
    from alloy.errors import ConfigError

    config = _config(vlms, modules=["text_decoder", "vision_tower"])
    with pytest.raises(ConfigError, match=r"visual\.merger\..*multi_modal_projector"):
        run_alloy(yaml.safe_dump(config), tmp_path / "alloy")


def test_an_unknown_module_name_is_an_error(vlms: list[Path], tmp_path: Path) -> None:
    from alloy.errors import ConfigError

    config = _config(vlms)
    config["modules"]["vision_encoder"] = config["modules"].pop("vision_tower")
    with pytest.raises(ConfigError, match="'vision_encoder' is none of them"):
        run_alloy(yaml.safe_dump(config), tmp_path / "alloy")


def test_slices_inside_a_module_are_refused(vlms: list[Path], tmp_path: Path) -> None:
    from alloy.errors import ConfigError

    config = _config(vlms)
    a, b = (str(p) for p in vlms[1:])
    config["modules"]["text_decoder"] = {
        "slices": [
            {
                "sources": [
                    {"model": a, "layer_range": [0, 2], "parameters": {"weight": 0.5}},
                    {"model": b, "layer_range": [0, 2], "parameters": {"weight": 0.5}},
                ]
            }
        ]
    }
    with pytest.raises(ConfigError, match="`slices:` inside a module"):
        run_alloy(yaml.safe_dump(config), tmp_path / "alloy")


def test_modules_of_an_architecture_without_modules_are_an_error(tmp_path: Path) -> None:
    from compat.standins import family

    from alloy.errors import ConfigError

    _base, a, b = family(tmp_path / "standins", "llama", 2, 2)
    config = {
        "merge_method": "linear",
        "modules": {
            "text_decoder": {"models": [{"model": str(a)}, {"model": str(b)}]},
            "vision_tower": {"models": [{"model": str(a)}, {"model": str(b)}]},
        },
        "parameters": {"weight": 0.5},
    }
    with pytest.raises(ConfigError, match="knows none of model type 'llama'"):
        run_alloy(yaml.safe_dump(config), tmp_path / "alloy")
