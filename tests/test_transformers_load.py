"""Alloy's outputs are real Hugging Face models: `from_pretrained` loads them, and they compute
the same logits as a model holding the merged weights computed here by hand from the sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoints import KINDS, MakeModel, ModelSet, load_state_dict, weight_files

transformers = pytest.importorskip("transformers")

Weights = dict[str, torch.Tensor]


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if name.startswith("model.layers.") else None


def hand_linear(m: ModelSet) -> Weights:
    """(ft1 + ft2) / 2 per tensor, in fp32, stored in the models' dtype."""
    a, b = load_state_dict(m.ft1), load_state_dict(m.ft2)
    assert sorted(a) == sorted(b)
    return {n: ((a[n].float() + b[n].float()) / 2).to(a[n].dtype) for n in a}


def hand_frankenmerge(m: ModelSet) -> Weights:
    """ft1 layers 0-2, then ft2 layers 1-3: embeddings from ft1, final norm (and head) from ft2."""
    a, b = load_state_dict(m.ft1), load_state_dict(m.ft2)
    out: Weights = {n: t for n, t in a.items() if n.startswith("model.embed_tokens.")}
    out.update({n: t for n, t in a.items() if (i := _layer(n)) is not None and i < 3})
    for n, t in b.items():
        i = _layer(n)
        if i is None and not n.startswith("model.embed_tokens."):
            out[n] = t
        elif i is not None and i >= 1:
            out[n.replace(f"model.layers.{i}.", f"model.layers.{i + 2}.", 1)] = t
    return out


FRANKEN_SLICES = [((0, 3), "ft1"), ((1, 4), "ft2")]


def config_for(case: str, m: ModelSet) -> dict:
    dtype = {"dtype": m.dtype}
    if case == "linear":
        models = [{"model": str(p), "parameters": {"weight": 0.5}} for p in (m.ft1, m.ft2)]
        return {"merge_method": "linear", "models": models, **dtype}
    slices = [
        {"sources": [{"model": str(getattr(m, who)), "layer_range": list(rng)}]}
        for rng, who in FRANKEN_SLICES
    ]
    return {"merge_method": "passthrough", "slices": slices, **dtype}


def reference_model(src: Path, weights: Weights, num_layers: int) -> torch.nn.Module:
    """A model of the sources' architecture holding `weights` (fp32), built without Alloy."""
    overrides: dict = {"num_hidden_layers": num_layers}
    src_config = json.loads((src / "config.json").read_text())
    if "layer_types" in src_config:  # transformers 5 checks len(layer_types) == num layers
        overrides["layer_types"] = [src_config["layer_types"][0]] * num_layers
    config = transformers.AutoConfig.from_pretrained(src, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(
        {n: t.float() for n, t in weights.items()}, strict=False
    )
    assert not unexpected, unexpected
    if config.tie_word_embeddings:
        assert set(missing) <= {"lm_head.weight"}, missing
        model.tie_weights()
    else:
        assert not missing, missing
    return model.eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(4, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("case", ["linear", "frankenmerge"])
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_merged_model_loads_and_matches_hand_merge(
    kind: str, case: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import alloy

    models: ModelSet = request.getfixturevalue(f"{kind}_models")
    out = tmp_path / "merged"
    alloy.merge(config_for(case, models), out, copy_tokenizer=False)

    expected = hand_linear(models) if case == "linear" else hand_frankenmerge(models)
    written = load_state_dict(out)
    assert sorted(written) == sorted(expected)
    for n, t in expected.items():
        assert written[n].dtype == t.dtype, n
        assert torch.equal(written[n], t), f"{n}: max |diff| {(written[n] - t).abs().max()}"

    num_layers = 4 if case == "linear" else 6
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == num_layers
    if "layer_types" in cfg:  # qwen2: one entry per output layer, or transformers refuses it
        assert len(cfg["layer_types"]) == num_layers
    merged = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert merged.config.num_hidden_layers == num_layers
    ref = reference_model(models.ft1, expected, num_layers)
    got, want = logits(merged), logits(ref)
    assert torch.allclose(got, want, atol=1e-5), f"max |diff| {(got - want).abs().max()}"

    if kind == "qwen2":  # tied embeddings stay tied: no head written, one shared matrix loaded
        assert "lm_head.weight" not in written
        assert cfg["tie_word_embeddings"] is True
        assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    else:
        assert "lm_head.weight" in written
        assert not torch.equal(merged.lm_head.weight, merged.model.embed_tokens.weight)


def test_tokenizer_copied(llama_models: ModelSet, tmp_path: Path) -> None:
    import alloy

    out = tmp_path / "merged"
    alloy.merge(config_for("linear", llama_models), out)
    src = transformers.AutoTokenizer.from_pretrained(llama_models.ft1)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "w1 w7 w42 zzz"
    assert tok(text)["input_ids"] == src(text)["input_ids"] == [5, 11, 46, 0]
    assert (tok.eos_token, tok.pad_token) == ("</s>", "<pad>")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_factory_checkpoints_load(kind: str, make_model: MakeModel, tmp_path: Path) -> None:
    """Every factory kind and layout is a checkpoint transformers loads without missing or
    unexpected keys, holding the tensors on disk; a fine-tune differs from its base by about
    `delta_scale`."""
    base = make_model(kind, tmp_path / "base", seed=0, shards=2)
    ft = make_model(kind, tmp_path / "ft", seed=1, base=base, fmt="bin", shards=3)
    assert len([f for f in weight_files(base) if f.endswith(".safetensors")]) == 2
    assert len([f for f in weight_files(ft) if f.endswith(".bin")]) == 3
    model_cls = getattr(transformers, KINDS[kind][1])
    for path in (base, ft):
        assert sum(f.stat().st_size for f in path.iterdir()) < 1_000_000
        model, info = model_cls.from_pretrained(path, output_loading_info=True)
        assert not any(info.values()), info
        on_disk, loaded = load_state_dict(path), model.state_dict()
        for n in set(on_disk) & set(loaded):
            assert torch.equal(on_disk[n], loaded[n]), n
    a, b = load_state_dict(base), load_state_dict(ft)
    assert sorted(a) == sorted(b)
    total = (
        torch.cat([(b[n] - a[n]).flatten() for n in a]).norm()
        / torch.cat([a[n].flatten() for n in a]).norm()
    )
    assert 0.003 < float(total) < 0.03
