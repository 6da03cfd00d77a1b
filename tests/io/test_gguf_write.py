"""Writing GGUF (F32, F16, BF16, Q8_0) and converting both ways: what Alloy writes, the `gguf`
reader (through Alloy's source) and transformers load back with the same tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import MakeModel
from click.testing import CliRunner

from alloy.cli import main
from alloy.convert import convert
from alloy.errors import OutputError
from alloy.io.gguf import GGUFSource
from alloy.io.gguf.reader import GGUFFile
from alloy.io.gguf.writer import write_gguf
from alloy.io.sources import open_weights

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from tests.io import gguf_tiny  # noqa: E402

ARCHS = ["llama", "qwen2", "gemma3"]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOY_CACHE_DIR", str(tmp_path / "cache"))


def _hf_model(tmp_path: Path, arch: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Hugging Face directory converted from a float32 GGUF, and its tensors."""
    gguf_tiny.write_model(tmp_path / "src.gguf", arch, types=["F32"], tokenizer="qwen2")
    convert(tmp_path / "src.gguf", tmp_path / "hf")
    src = open_weights(tmp_path / "hf")
    tensors = {n: src.get(n) for n in src.names()}
    src.close()
    return tmp_path / "hf", tensors


def q8_bound(t: torch.Tensor) -> torch.Tensor:
    """Q8_0's error bound per value: half a step of its block of 32 (the step is the block's
    largest magnitude / 127), plus the float16 rounding of the step (127 steps of 2^-11)."""
    blocks = t.float().reshape(-1, 32).abs().amax(dim=1, keepdim=True) / 127
    return (blocks * (0.5 + 127 * 2.0**-11)).expand(-1, 32).reshape(t.shape)


def expected(t: torch.Tensor, dtype: str) -> torch.Tensor:
    if dtype == "F16":
        return t.half().float()
    if dtype == "BF16":
        return t.bfloat16().float()
    return t.float()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16", "Q8_0"])
def test_written_gguf_reads_back_in_alloy_and_transformers(
    tmp_path: Path, arch: str, dtype: str
) -> None:
    hf, tensors = _hf_model(tmp_path, arch)
    out = write_gguf(hf, tmp_path / "out" / "m.gguf", dtype)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(out.parent), gguf_file=out.name, dtype=torch.float32
    ).state_dict()
    back = GGUFSource(out)
    assert set(back.names()) == set(tensors)
    worst = 0.0
    for name, t in tensors.items():
        got = back.get(name).float()
        assert torch.equal(got, ref[name]), name  # transformers reads what alloy reads
        if t.ndim == 1:  # stored F32; Gemma's norms went through +1 and -1 in float32
            torch.testing.assert_close(got, t, rtol=0, atol=2e-7)
        elif dtype == "Q8_0":
            err = (got - t).abs()
            assert (err <= q8_bound(t)).all(), name
            worst = max(worst, float((err / t.abs().max()).max()))
        else:
            assert torch.equal(got, expected(t, dtype)), name
    if dtype == "Q8_0":
        assert 0 < worst < 1 / 200  # of each tensor's largest magnitude
    raw = {t.name: t.qtype for t in GGUFFile(out).tensors}
    assert raw["token_embd.weight"] == int(gguf.GGMLQuantizationType[dtype])
    assert raw["output_norm.weight"] == int(gguf.GGMLQuantizationType.F32)


def test_metadata_and_tokenizer_survive_the_round_trip(tmp_path: Path) -> None:
    gguf_tiny.write_model(tmp_path / "src.gguf", "llama", types=["F32"], tokenizer="llama-bpe")
    convert(tmp_path / "src.gguf", tmp_path / "hf")
    out = convert(tmp_path / "hf", tmp_path / "back.gguf", dtype="F16").out
    a, b = GGUFFile(tmp_path / "src.gguf").metadata, GGUFFile(out).metadata
    for key in (
        "llama.block_count",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.rope.dimension_count",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
    ):
        assert b[key] == pytest.approx(a[key]) if isinstance(a[key], float) else b[key] == a[key]
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="back.gguf")
    mine = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "Hello the world, <|endoftext|> 123 <think>"
    assert ref(text)["input_ids"] == mine(text)["input_ids"]


def test_converted_directory_loads_in_transformers_like_the_gguf(tmp_path: Path) -> None:
    gguf_tiny.write_model(tmp_path / "m.gguf", "llama", tokenizer="gpt2")
    convert(tmp_path / "m.gguf", tmp_path / "hf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file="m.gguf", dtype=torch.float32
    )
    mine = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    ids = torch.tensor([[1, 5, 200, 17]])
    with torch.no_grad():
        assert torch.equal(mine(ids).logits, ref(ids).logits)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32"
    convert(tmp_path / "m.gguf", tmp_path / "hf16", dtype="bfloat16")
    assert open_weights(tmp_path / "hf16").info("model.norm.weight").dtype == torch.bfloat16


def test_cli_convert_both_ways_and_errors(tmp_path: Path) -> None:
    gguf_tiny.write_model(tmp_path / "m.gguf", "qwen2", types=["Q8_0"])
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "m.gguf"), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    assert "gguf->hf" in r.output and (tmp_path / "hf" / "model.safetensors").is_file()
    r = CliRunner().invoke(
        main, ["convert", str(tmp_path / "hf"), str(tmp_path / "o.gguf"), "--dtype", "q8_0"]
    )
    assert r.exit_code == 0, r.output
    assert GGUFFile(tmp_path / "o.gguf").metadata["general.file_type"] == 7
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "hf"), str(tmp_path / "o.gguf")])
    assert r.exit_code == 1 and "exists; pass --force" in r.output
    r = CliRunner().invoke(
        main, ["convert", str(tmp_path / "hf"), str(tmp_path / "p.gguf"), "--dtype", "Q4_0"]
    )
    assert r.exit_code == 1 and "'Q4_0' is not one Alloy writes" in r.output
    assert not (tmp_path / "p.gguf").exists()
    with pytest.raises(OutputError, match="model_type 'bert' has no GGUF map"):
        (tmp_path / "bert").mkdir()
        (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
        write_gguf(tmp_path / "bert", tmp_path / "b.gguf")


def test_merge_check_and_inventory_accept_gguf_models(tmp_path: Path) -> None:
    gguf_tiny.write_model(tmp_path / "a.gguf", "llama", types=["Q8_0"], seed=1, tokenizer="gpt2")
    (tmp_path / "b").mkdir()
    gguf_tiny.write_model(
        tmp_path / "b" / "b.gguf", "llama", types=["Q4_K"], seed=2, tokenizer="gpt2"
    )
    cfg = tmp_path / "merge.yml"
    cfg.write_text(
        "merge_method: linear\ndtype: float32\nmodels:\n"
        f"  - model: {tmp_path / 'a.gguf'}\n    parameters: {{weight: 0.25}}\n"
        f"  - model: {tmp_path / 'b'}\n    parameters: {{weight: 0.75}}\n"
    )
    r = CliRunner().invoke(main, ["merge", str(cfg), str(tmp_path / "out"), "--gguf", "bf16"])
    assert r.exit_code == 0, r.output
    assert "out.BF16.gguf" in r.output
    merged = open_weights(tmp_path / "out")  # the safetensors: the GGUF is a side file
    written = GGUFSource(tmp_path / "out" / "out.BF16.gguf")
    for name in merged.names():  # 1-D tensors are stored F32
        t = merged.get(name)
        assert torch.equal(written.get(name).float(), expected(t, "BF16" if t.ndim > 1 else "F32"))
    a, b = GGUFSource(tmp_path / "a.gguf"), GGUFSource(tmp_path / "b" / "b.gguf")
    assert set(merged.names()) == set(a.names())
    for name in a.names():
        want = 0.25 * a.get(name).float() + 0.75 * b.get(name).float()
        torch.testing.assert_close(merged.get(name), want, rtol=1e-6, atol=1e-6)
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert model.config.num_hidden_layers == gguf_tiny.LAYERS
    for cmd in (
        ["check", str(tmp_path / "a.gguf"), str(tmp_path / "b")],
        ["inventory", str(tmp_path / "a.gguf")],
    ):
        r = CliRunner().invoke(main, cmd)
        assert r.exit_code == 0, r.output
    assert np.isfinite(merged.get("model.norm.weight").numpy()).all()


def test_eval_and_analyze_accept_gguf_models(tmp_path: Path) -> None:
    gguf_tiny.write_model(tmp_path / "a.gguf", "llama", types=["Q8_0"], seed=1, tokenizer="gpt2")
    gguf_tiny.write_model(tmp_path / "b.gguf", "llama", types=["Q5_1"], seed=2, tokenizer="gpt2")
    convert(tmp_path / "a.gguf", tmp_path / "a-hf")
    data = tmp_path / "d.txt"
    data.write_text("Hello the world, the world.\n" * 8)
    r = CliRunner().invoke(
        main,
        ["eval", str(tmp_path / "a.gguf"), str(tmp_path / "a-hf"), "--data", str(data), "--json"],
    )
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output[r.output.index("{") :])
    values = ev["rows"][0]["values"]  # the GGUF and its conversion are one model
    assert values[str(tmp_path / "a.gguf")] == pytest.approx(values[str(tmp_path / "a-hf")])
    assert ev["tokens"]["d"][str(tmp_path / "a.gguf")] == ev["tokens"]["d"][str(tmp_path / "a-hf")]
    r = CliRunner().invoke(main, ["analyze", str(tmp_path / "a.gguf"), str(tmp_path / "b.gguf")])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_transformers_checkpoints_write_as_gguf_transformers_reads(
    tmp_path: Path, make_model: MakeModel, kind: str
) -> None:
    """From checkpoints transformers saved itself: its GGUF loading (which undoes llama.cpp's
    Q/K permutation) gives back every tensor Alloy wrote, and the model computes alike."""
    # not named "mistral": transformers' GGUF loader takes a general.name containing "mistral"
    # for gguf-py's (absent) mistral architecture
    hf = make_model(kind, tmp_path / f"tiny-{kind[:3]}", seed=3)
    out = write_gguf(hf, tmp_path / "m.gguf", "F32")
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(hf))
    back = transformers.AutoModelForCausalLM.from_pretrained(
        str(out.parent), gguf_file=out.name, dtype=torch.float32
    )
    want, got = ref.state_dict(), back.state_dict()
    assert set(got) == set(want)
    for name, t in want.items():
        assert torch.equal(got[name], t), name
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(back(ids).logits, ref(ids).logits)


def test_a_merge_into_the_directory_of_an_input_gguf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    a = tmp_path / "m" / "a.gguf"
    gguf_tiny.write_model(a, "llama", types=["Q8_0"], seed=1, tokenizer="gpt2")
    gguf_tiny.write_model(tmp_path / "b.gguf", "llama", types=["Q8_0"], seed=2, tokenizer="gpt2")
    before = a.read_bytes()
    cfg = tmp_path / "merge.yml"
    cfg.write_text(
        "merge_method: linear\nmodels:\n"
        f"  - model: {a}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {tmp_path / 'b.gguf'}\n    parameters: {{weight: 0.5}}\n"
    )
    r = CliRunner().invoke(main, ["merge", str(cfg), str(tmp_path / "m"), "--force"])
    assert r.exit_code == 1 and "overlaps the input model" in r.output
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["a.gguf"]
    assert a.read_bytes() == before


def test_a_merge_with_gguf_is_one_alloy_output_that_force_replaces(
    tmp_path: Path, make_model: MakeModel
) -> None:
    """The GGUF is written inside the atomic output, so the output's marker lists it and a
    rerun with --force replaces the whole output (the side file is not "a file Alloy did not
    write")."""
    a = make_model("llama", tmp_path / "a", seed=1)
    b = make_model("llama", tmp_path / "b", seed=2)
    cfg = tmp_path / "merge.yml"
    cfg.write_text(
        f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {b}\n    parameters: {{weight: 0.5}}\n"
    )
    out = tmp_path / "out"
    args = ["merge", str(cfg), str(out), "--gguf", "f16", "--no-write-model-card"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    marker = json.loads((out / ".alloy-output.json").read_text())
    assert "out.F16.gguf" in marker["files"] and "README.md" not in marker["files"]
    again = CliRunner().invoke(main, [*args, "--force"])
    assert again.exit_code == 0, again.output
    assert (out / "out.F16.gguf").is_file() and not (out / "README.md").exists()
