"""GGUF reading (every quantization type, every mapped architecture) against transformers' GGUF
loading of the same small files, which the tests write with the `gguf` package itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alloy.errors import CheckpointError, ModelNotFoundError
from alloy.io.gguf import GGUFSource, find_gguf, gguf_view, read_model_config
from alloy.io.gguf.reader import GGUFFile
from alloy.io.gguf.tokenizer import tokenizer_files
from alloy.io.gguf.view import MARKER, write_model_files

pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from tests.io import gguf_tiny  # noqa: E402

ARCHS = ["llama", "qwen2", "gemma3"]
CONFIG_FIELDS = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "rms_norm_eps",
    "max_position_embeddings",
    "vocab_size",
    "head_dim",
    "tie_word_embeddings",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOY_CACHE_DIR", str(tmp_path / "cache"))


def _reference(directory: Path, name: str) -> dict[str, torch.Tensor]:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(directory), gguf_file=name, dtype=torch.float32
    )
    return model.state_dict()


@pytest.mark.parametrize("arch", ARCHS)
def test_every_type_dequantizes_as_transformers_loads_it(tmp_path: Path, arch: str) -> None:
    stored = gguf_tiny.write_model(tmp_path / "m.gguf", arch)
    assert {t for t, shape in stored.values() if len(shape) == 2} == set(gguf_tiny.TYPES)
    ref = _reference(tmp_path, "m.gguf")
    src = GGUFSource(tmp_path / "m.gguf")
    assert set(src.names()) == set(ref)
    for name in src.names():
        got = src.get(name)
        assert got.shape == ref[name].shape, name
        assert torch.equal(got.float(), ref[name]), (name, src.raw(name).qtype)
        assert src.info(name).dtype == got.dtype
    src.close()


def test_rows_are_slices_of_the_tensor(tmp_path: Path) -> None:
    gguf_tiny.write_model(tmp_path / "m.gguf", "llama")
    src = GGUFSource(tmp_path / "m.gguf")
    for name in src.names():
        full = src.get(name)
        if full.ndim == 2:
            assert torch.equal(src.get(name, (3, 70)), full[3:70]), name


def test_llama_qk_rows_are_unpermuted(tmp_path: Path) -> None:
    """llama.cpp stores, per head, row 2j+p at Hugging Face row p*half+j: written here by index."""
    heads, kv_heads, hd = gguf_tiny.HEADS, gguf_tiny.KV_HEADS, gguf_tiny.HEAD_DIM
    rng = np.random.default_rng(1)
    hf = {
        "q": rng.standard_normal((heads * hd, 256)),
        "k": rng.standard_normal((kv_heads * hd, 256)),
    }
    stored = {}
    for key, n in (("q", heads), ("k", kv_heads)):
        rows = [
            h * hd + p * (hd // 2) + j for h in range(n) for j in range(hd // 2) for p in (0, 1)
        ]
        stored[key] = hf[key][rows].astype(np.float32)
    w = gguf_tiny.gguf.GGUFWriter(str(tmp_path / "p.gguf"), "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_uint32("llama.embedding_length", 256)
    w.add_uint32("llama.attention.head_count", heads)
    w.add_uint32("llama.attention.head_count_kv", kv_heads)
    w.add_tensor("blk.0.attn_q.weight", stored["q"])
    w.add_tensor("blk.0.attn_k.weight", stored["k"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    src = GGUFSource(tmp_path / "p.gguf")
    q = src.get("model.layers.0.self_attn.q_proj.weight")
    k = src.get("model.layers.0.self_attn.k_proj.weight")
    assert torch.equal(q, torch.from_numpy(hf["q"].astype(np.float32)))
    assert torch.equal(k, torch.from_numpy(hf["k"].astype(np.float32)))
    assert torch.equal(src.get("model.layers.0.self_attn.q_proj.weight", (64, 128)), q[64:128])


@pytest.mark.parametrize("arch", ARCHS)
def test_config_matches_transformers(tmp_path: Path, arch: str) -> None:
    gguf_tiny.write_model(tmp_path / "m.gguf", arch, tied=arch != "qwen2")
    ref = transformers.AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    cfg = read_model_config(tmp_path / "m.gguf")
    assert cfg["model_type"] == ref.model_type
    for field in [
        f for f in CONFIG_FIELDS if f != "head_dim" or arch != "qwen2"
    ]:  # floats: alloy keeps the decimal float32 stands for (1e-06)
        assert cfg[field] == pytest.approx(getattr(ref, field), rel=1e-7), field
    assert cfg["tie_word_embeddings"] is (arch != "qwen2")
    # the config alloy writes loads into transformers as the same model class
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**cfg))
    assert type(model).__name__ == cfg["architectures"][0]
    src = GGUFSource(tmp_path / "m.gguf")
    assert ("lm_head.weight" in src.names()) is (arch == "qwen2")


@pytest.mark.parametrize("pre", ["gpt2", "qwen2", "llama-bpe", "smollm"])
def test_tokenizer_encodes_as_transformers_gguf_tokenizer(tmp_path: Path, pre: str) -> None:
    gguf_tiny.write_tokenizer_only(tmp_path / "t.gguf", pre)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="t.gguf")
    files = tokenizer_files(GGUFFile(tmp_path / "t.gguf").metadata)
    assert files is not None
    (tmp_path / "hf").mkdir()
    write_model_files(files, tmp_path / "hf")
    mine = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in ["Hello the world, <|endoftext|> <think>ok", " the  wor\n\ntell\tthe"]:
        assert mine(text)["input_ids"] == ref(text)["input_ids"], text
        assert mine.decode(mine(text)["input_ids"]) == text
    msgs = [{"role": "user", "content": "hi the"}, {"role": "assistant", "content": "or"}]
    assert mine.apply_chat_template(msgs, tokenize=False) == "<user>hi the<assistant>or"
    assert mine.eos_token == "<|endoftext|>"
    digits = mine("x 12")["input_ids"]
    if pre == "smollm":  # llama.cpp (and SmolLM's own tokenizer) split digits one by one
        assert digits == mine("x 1")["input_ids"] + mine("2")["input_ids"]
    else:
        assert digits == ref("x 12")["input_ids"]


def test_tokenizer_adds_bos_when_the_file_says_so(tmp_path: Path) -> None:
    meta = gguf_tiny.write_tokenizer_only(tmp_path / "t.gguf", "gpt2", add_bos=True)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="t.gguf")
    files = tokenizer_files(GGUFFile(tmp_path / "t.gguf").metadata)
    assert files is not None
    (tmp_path / "hf").mkdir()
    write_model_files(files, tmp_path / "hf")
    mine = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ids = mine("the world")["input_ids"]
    assert ids[0] == meta["tokenizer.ggml.bos_token_id"]
    assert ids == ref("the world")["input_ids"]


def test_directory_and_view_resolve_to_the_file(tmp_path: Path) -> None:
    gguf_tiny.write_model(tmp_path / "m.gguf", "qwen2", types=["F16"])
    assert find_gguf(tmp_path) == (tmp_path / "m.gguf").resolve()
    view = gguf_view(tmp_path / "m.gguf")
    assert find_gguf(view) == (tmp_path / "m.gguf").resolve()
    assert json.loads((view / MARKER).read_text())["gguf"] == str((tmp_path / "m.gguf").resolve())
    assert gguf_view(tmp_path / "m.gguf") == view  # cached
    assert read_model_config(view)["model_type"] == "qwen2"
    assert read_model_config(view)["torch_dtype"] == "float16"
    gguf_tiny.write_model(tmp_path / "other.gguf", "qwen2", types=["F16"])
    with pytest.raises(ModelNotFoundError, match=r"2 GGUF files \(m.gguf, other.gguf\)"):
        find_gguf(tmp_path)


def test_corrupt_truncated_and_unknown_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(CheckpointError, match=r"junk.gguf is not a readable GGUF file"):
        GGUFSource(tmp_path / "junk.gguf")
    gguf_tiny.write_model(tmp_path / "m.gguf", "llama", types=["F32"])
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"cut.gguf"):
        GGUFSource(tmp_path / "cut.gguf")
    w = gguf_tiny.gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match=r"architecture 'mamba' has no tensor-name map"):
        GGUFSource(tmp_path / "x.gguf")


def test_missing_gguf_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_tiny.write_model(tmp_path / "m.gguf", "llama", types=["F32"])
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(CheckpointError, match=r"pip install 'alloy-merge\[gguf\]'"):
        GGUFSource(tmp_path / "m.gguf")
