"""Options: devices, progress, --allow-crimes, tokenizer source, chat templates, .bin inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import read_dir, write_tiny

import alloy
from alloy.config.chat_templates import CHATML
from alloy.errors import AlloyError, ConfigError, IncompatibleModelsError


def _linear(a: Path, b: Path, **extra: object) -> dict:
    return {
        "merge_method": "linear",
        "models": [
            {"model": str(a), "parameters": {"weight": 1.0}},
            {"model": str(b), "parameters": {"weight": 1.0}},
        ],
        **extra,
    }


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    return tmp_path / "a", tmp_path / "b"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_clear_error(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(AlloyError, match="no CUDA device"):
        alloy.merge(_linear(*pair), tmp_path / "out", device="cuda")
    with pytest.raises(AlloyError, match="unknown device 'tpu'"):
        alloy.merge(_linear(*pair), tmp_path / "out", device="tpu")
    assert not (tmp_path / "out").exists()


def test_progress_bar_counts_tensors(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alloy.merge(_linear(*pair), tmp_path / "out", progress=True)
    err = capsys.readouterr().err
    assert "alloy linear" in err and "12/12 tensors" in err and "B/s" in err


def test_different_architectures_need_allow_crimes(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(
        tmp_path / "m", 1, config={"model_type": "mistral", "architectures": ["MistralForCausalLM"]}
    )
    with pytest.raises(IncompatibleModelsError) as e:
        alloy.merge(_linear(tmp_path / "a", tmp_path / "m"), tmp_path / "out")
    row = next(line for line in str(e.value).splitlines() if "model_type" in line)
    assert row.split()[-3:] == ["llama", "mistral", "crime"] and "--allow-crimes" in str(e.value)
    res = alloy.merge(_linear(tmp_path / "a", tmp_path / "m"), tmp_path / "out", allow_crimes=True)
    assert any("--allow-crimes" in n for n in res.notes)


def test_tokenizer_source_model(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    (b / "tokenizer_config.json").write_text(json.dumps({"marker": "from b"}))
    res = alloy.merge(_linear(a, b, tokenizer_source=str(b)), tmp_path / "out")
    assert json.loads((res.out_dir / "tokenizer_config.json").read_text()) == {"marker": "from b"}
    res2 = alloy.merge(_linear(a, b, tokenizer_source="base"), tmp_path / "out2")
    assert "marker" not in json.loads((res2.out_dir / "tokenizer_config.json").read_text())


def test_chat_template_builtin_auto_and_invalid(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    res = alloy.merge(_linear(a, b, chat_template="chatml"), tmp_path / "out")
    assert (res.out_dir / "chat_template.jinja").read_text() == CHATML
    literal = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    for p in (a, b):
        cfg = json.loads((p / "tokenizer_config.json").read_text())
        cfg["chat_template"] = literal
        (p / "tokenizer_config.json").write_text(json.dumps(cfg))
    res2 = alloy.merge(_linear(a, b, chat_template="auto"), tmp_path / "out2")
    assert (res2.out_dir / "chat_template.jinja").read_text() == literal
    # the .jinja file is the one source of truth
    assert "chat_template" not in json.loads((res2.out_dir / "tokenizer_config.json").read_text())
    with pytest.raises(ConfigError, match="neither a built-in name"):
        alloy.merge(_linear(a, b, chat_template="chatmlx"), tmp_path / "out3")


def test_bin_inputs_merge_like_safetensors(tmp_path: Path) -> None:
    ta = write_tiny(tmp_path / "a", 0)
    tb = write_tiny(tmp_path / "b", 1)
    for name, t in (("a_bin", ta), ("b_bin", tb)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
        keys = sorted(t)
        half = len(keys) // 2
        torch.save({k: t[k] for k in keys[:half]}, d / "pytorch_model-00001-of-00002.bin")
        torch.save({k: t[k] for k in keys[half:]}, d / "pytorch_model-00002-of-00002.bin")
        weight_map = {
            k: f"pytorch_model-0000{1 + (i >= half)}-of-00002.bin" for i, k in enumerate(keys)
        }
        (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "st")
    alloy.merge(_linear(tmp_path / "a_bin", tmp_path / "b_bin"), tmp_path / "bin")
    st, bn = read_dir(tmp_path / "st"), read_dir(tmp_path / "bin")
    assert st.keys() == bn.keys()
    for k in st:
        assert torch.equal(st[k], bn[k])
