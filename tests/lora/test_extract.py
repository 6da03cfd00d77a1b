"""`alloy lora extract`: FT − BASE per module by truncated SVD, into a PEFT adapter.

Fine-tunes are built here as base + known low-rank deltas (plus a little full-rank noise where
the error bound should show), so the expected ranks and errors come from `torch.linalg.svdvals`
of the deltas, computed in the test; the extracted adapter is applied by PEFT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from adapters import Weights, make_adapter, peft_merged
from checkpoints import MakeModel, ModelSet, load_state_dict, write_weights
from click.testing import CliRunner

from alloy.cli import main
from alloy.errors import AlloyError
from alloy.lora.extract import extract_lora

pytestmark = pytest.mark.parity

LOW_RANK = 3


def write_finetune(base: Path, out: Path, deltas: Weights) -> Path:
    """A copy of `base` (configs, tokenizer) whose weights are base + `deltas`."""
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    weights = load_state_dict(base)
    write_weights({n: w + deltas[n] if n in deltas else w for n, w in weights.items()}, out)
    return out


def low_rank_deltas(weights: Weights, seed: int, noise: float = 0.0) -> Weights:
    """Rank-3 deltas on every attention/MLP matrix and the head (plus optional full-rank noise),
    a 1-D change to one norm and a rank-3 change to the token embeddings."""
    gen = torch.Generator().manual_seed(seed)
    out: Weights = {}
    for n, w in weights.items():
        if w.dim() == 2 and any(k in n for k in ("proj", "embed_tokens", "lm_head")):
            u = torch.randn(w.shape[0], LOW_RANK, generator=gen)
            v = torch.randn(LOW_RANK, w.shape[1], generator=gen)
            out[n] = 0.01 * u @ v + noise * torch.randn(w.shape, generator=gen)
    norm = next(n for n in weights if n.endswith("input_layernorm.weight"))
    out[norm] = 0.1 * torch.ones_like(weights[norm])
    return out


@pytest.fixture(scope="module")
def llama_ft(llama_models: ModelSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights = load_state_dict(llama_models.base)
    ft = tmp_path_factory.mktemp("extract") / "ft"
    return write_finetune(llama_models.base, ft, low_rank_deltas(weights, seed=3, noise=1e-4))


def check_error_bound(
    result_modules: list, base: Path, ft: Path, adapter: Path, rank: int | None, energy=None
) -> int:
    applied, b, f = peft_merged(base, adapter), load_state_dict(base), load_state_dict(ft)
    checked = 0
    for m in result_modules:
        if m.rank == 0:
            continue
        delta = (f[m.tensor] - b[m.tensor]).double()
        s2 = torch.linalg.svdvals(delta) ** 2
        share = torch.cumsum(s2, 0) / s2.sum()
        want_rank = min(rank or len(s2), len(s2))
        if energy is not None:
            want_rank = min(want_rank, int((share < energy - 1e-12).sum()) + 1)
        assert m.rank == want_rank, m.tensor
        bound = float((s2[want_rank:].sum() / s2.sum()).sqrt())
        error = float((applied[m.tensor].double() - f[m.tensor].double()).norm() / delta.norm())
        assert error == pytest.approx(bound, rel=1e-2, abs=2e-6), m.tensor
        assert m.relative_error == pytest.approx(bound, rel=1e-3, abs=1e-6), m.tensor
        checked += 1
    return checked


def test_extract_to_a_rank(llama_models: ModelSet, llama_ft: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = extract_lora(str(llama_ft), str(llama_models.base), out, rank=LOW_RANK)
    assert check_error_bound(result.modules, llama_models.base, llama_ft, out, LOW_RANK) == 29
    kinds = {m.tensor: m.kind for m in result.modules}
    assert kinds["lm_head.weight"] == "linear"  # a LoRA like any Linear, not a full-rank copy
    assert kinds["model.embed_tokens.weight"].startswith("not extracted: embedding")
    assert kinds["model.layers.0.input_layernorm.weight"] == "not extracted: 1-D"
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(llama_models.base)
    assert cfg["r"] == cfg["lora_alpha"] == LOW_RANK and cfg["task_type"] == "CAUSAL_LM"
    assert "README.md" in {p.name for p in out.iterdir()}


def test_extract_to_an_energy_with_embeddings(
    llama_models: ModelSet, llama_ft: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    result = extract_lora(str(llama_ft), str(llama_models.base), out, energy=0.999, embeddings=True)
    n = check_error_bound(result.modules, llama_models.base, llama_ft, out, None, energy=0.999)
    assert n == 30  # the 28 layer matrices, the head and the token embeddings
    emb = next(m for m in result.modules if m.tensor == "model.embed_tokens.weight")
    assert emb.kind == "embedding" and emb.rank == LOW_RANK
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "base_model.model.model.embed_tokens.lora_embedding_A" in keys


def test_randomized_svd_recovers_low_rank_deltas(llama_models: ModelSet, tmp_path: Path) -> None:
    weights = load_state_dict(llama_models.base)
    ft = write_finetune(llama_models.base, tmp_path / "ft", low_rank_deltas(weights, seed=4))
    out = tmp_path / "adapter"
    result = extract_lora(str(ft), str(llama_models.base), out, rank=LOW_RANK, randomized=True)
    applied, want = peft_merged(llama_models.base, out), load_state_dict(ft)
    for m in result.extracted:
        d = want[m.tensor] - weights[m.tensor]
        assert float((applied[m.tensor] - want[m.tensor]).norm() / d.norm()) < 1e-4
        assert m.relative_error < 1e-4 and m.energy > 1 - 1e-8


def test_gpt2_conv1d_extraction(make_model: MakeModel, tmp_path: Path) -> None:
    base = make_model("gpt2", tmp_path / "base", seed=0)
    ft = make_model("gpt2", tmp_path / "ft", seed=5, base=base, delta_scale=0.05)
    out = tmp_path / "adapter"
    result = extract_lora(str(ft), str(base), out, rank=64, embeddings=True)  # full rank: exact
    kinds = {m.tensor.split(".")[-2]: m.kind for m in result.modules}
    assert kinds["c_attn"] == kinds["c_fc"] == kinds["c_proj"] == "conv1d"
    assert kinds["wte"] == kinds["wpe"] == "embedding"  # token and position embeddings
    assert json.loads((out / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    applied, want = peft_merged(base, out), load_state_dict(ft)
    assert len(result.extracted) == 2 + 2 * 4  # wte, wpe; 2 layers of c_attn, c_proj, c_fc, c_proj
    for m in result.extracted:
        torch.testing.assert_close(applied[m.tensor], want[m.tensor], atol=1e-6, rtol=1e-5)


def test_extract_from_base_plus_adapter_rerank(llama_models: ModelSet, tmp_path: Path) -> None:
    adapter = make_adapter(
        llama_models.base, tmp_path / "a", seed=7, r=8, target_modules=["q_proj", "down_proj"]
    )
    out = tmp_path / "rank8"
    result = extract_lora(f"{llama_models.base}+{adapter}", str(llama_models.base), out, rank=8)
    assert {m.rank for m in result.extracted} == {8}
    assert all(m.energy == pytest.approx(1.0) for m in result.extracted)
    got, want = peft_merged(llama_models.base, out), peft_merged(llama_models.base, adapter)
    for m in result.extracted:
        torch.testing.assert_close(got[m.tensor], want[m.tensor], atol=1e-5, rtol=1e-5)


def test_bad_extractions_are_clear_errors(
    llama_models: ModelSet, make_model: MakeModel, tmp_path: Path
) -> None:
    base = str(llama_models.base)
    with pytest.raises(AlloyError, match="no weight that a LoRA can hold changed"):
        extract_lora(base, base, tmp_path / "o", rank=4)
    with pytest.raises(AlloyError, match="--rank R or --energy E"):
        extract_lora(str(llama_models.ft1), base, tmp_path / "o")
    with pytest.raises(AlloyError, match="randomized SVD needs --rank"):
        extract_lora(str(llama_models.ft1), base, tmp_path / "o", energy=0.9, randomized=True)
    gpt2 = make_model("gpt2", tmp_path / "gpt2", seed=0)
    with pytest.raises(AlloyError, match="do not have the same tensors"):
        extract_lora(str(gpt2), base, tmp_path / "o", rank=4)
    assert not (tmp_path / "o").exists()


def test_cli(llama_models: ModelSet, llama_ft: Path, tmp_path: Path) -> None:
    args = ["lora", "extract", str(tmp_path / "a"), "--model", str(llama_ft)]
    res = CliRunner().invoke(main, [*args, "--base", str(llama_models.base), "-r", "2"])
    assert res.exit_code == 0, res.output
    assert (
        "model.layers.3.mlp.down_proj.weight" in res.output and "extracted 29 modules" in res.output
    )
    assert peft_merged(llama_models.base, tmp_path / "a")
