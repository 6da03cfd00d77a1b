"""Architecture inference on real tiny checkpoints of eight families, checked through
transformers: a merge and a frankenmerge load and carry the weights computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoints import load_state_dict

import alloy
from alloy.arch.infer import infer, split_layer_name
from alloy.io.sources import open_weights

# kind -> (layer stack, an embedding, a tensor after the layers, AutoModel class name)
FAMILIES = {
    "llama": (
        "model.layers",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "AutoModelForCausalLM",
    ),
    "mistral": (
        "model.layers",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "AutoModelForCausalLM",
    ),
    "qwen2": (
        "model.layers",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "AutoModelForCausalLM",
    ),
    "gemma": (
        "model.layers",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "AutoModelForCausalLM",
    ),
    "phi3": (
        "model.layers",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "AutoModelForCausalLM",
    ),
    "gpt2": (
        "transformer.h",
        "transformer.wte.weight",
        "transformer.ln_f.weight",
        "AutoModelForCausalLM",
    ),
    "gpt_neox": (
        "gpt_neox.layers",
        "gpt_neox.embed_in.weight",
        "gpt_neox.final_layer_norm.weight",
        "AutoModelForCausalLM",
    ),
    "bert": (
        "bert.encoder.layer",
        "bert.embeddings.word_embeddings.weight",
        "cls.predictions.transform.dense.weight",
        "AutoModelForMaskedLM",
    ),
}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, make_model) -> dict[str, tuple[Path, Path]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("families")
    out = {}
    for kind in FAMILIES:
        a = make_model(kind, root / kind / "a", seed=0)
        b = make_model(kind, root / kind / "b", seed=1, base=a, delta_scale=0.05)
        out[kind] = (a, b)
    return out


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_inference_finds_stack_embeddings_and_head(kind: str, pairs: dict) -> None:
    a, _ = pairs[kind]
    stack, embed, post, _ = FAMILIES[kind]
    w = open_weights(a)
    cfg = json.loads((a / "config.json").read_text())
    info = infer(w.names(), cfg)
    assert list(info.stacks) == [stack]
    count_key = next(k for k in ("num_hidden_layers", "n_layer") if k in cfg)
    assert info.stacks[stack].num_layers == cfg[count_key]
    assert embed in info.pre and post in info.post
    assert all(split_layer_name(n) is None for n in info.pre + info.post)


def _load(kind: str, path: Path) -> torch.nn.Module:
    import transformers

    cls = getattr(transformers, FAMILIES[kind][3])
    model, loading = cls.from_pretrained(path, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    return model


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_linear_merge_loads_with_merged_weights(kind: str, pairs: dict, tmp_path: Path) -> None:
    a, b = pairs[kind]
    cfg = {
        "merge_method": "linear",
        "models": [
            {"model": str(a), "parameters": {"weight": 0.25}},
            {"model": str(b), "parameters": {"weight": 0.75}},
        ],
    }
    res = alloy.merge(cfg, tmp_path / "out")
    sa, sb = load_state_dict(a), load_state_dict(b)
    merged = load_state_dict(res.out_dir)
    assert set(merged) == set(sa)
    for k, v in sa.items():
        if v.is_floating_point():
            torch.testing.assert_close(merged[k], 0.25 * v + 0.75 * sb[k], rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(merged[k], v)
    model = _load(kind, res.out_dir)
    state = model.state_dict()
    for k, v in merged.items():
        if k in state:
            assert torch.equal(state[k], v), k


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_frankenmerge_sets_layer_count_and_loads(kind: str, pairs: dict, tmp_path: Path) -> None:
    a, b = pairs[kind]
    stack = FAMILIES[kind][0]
    cfg = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(a), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(b), "layer_range": [1, 2]}]},
        ],
    }
    res = alloy.merge(cfg, tmp_path / "out")
    out_cfg = json.loads((res.out_dir / "config.json").read_text())
    assert out_cfg.get("num_hidden_layers", out_cfg.get("n_layer")) == 3
    merged, sb = load_state_dict(res.out_dir), load_state_dict(b)
    for k, v in merged.items():
        split = split_layer_name(k)
        if split is not None and split[1] == 2:
            assert torch.equal(v, sb[f"{stack}.1.{split[2]}"])
    model = _load(kind, res.out_dir)
    assert sum(1 for k in model.state_dict() if f"{stack}.2." in k) > 0
