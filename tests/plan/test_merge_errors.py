"""Bad input: a clear error naming the file, model or tensor, a non-zero exit, no output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tiny import tiny_tensors, write_tiny

import alloy
from alloy.errors import (
    CheckpointError,
    ConfigError,
    IncompatibleModelsError,
    MergeComputationError,
    ModelNotFoundError,
    OutputError,
)


def _linear(a: Path, b: Path) -> dict:
    return {
        "merge_method": "linear",
        "models": [
            {"model": str(a), "parameters": {"weight": 0.5}},
            {"model": str(b), "parameters": {"weight": 0.5}},
        ],
    }


def _no_output(out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if "alloy-tmp" in p.name]
    assert leftovers == []


def test_missing_model_path(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    out = tmp_path / "out"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "nope"), out)
    _no_output(out)


def test_hub_id_not_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_tiny(tmp_path / "a", 0)
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        alloy.merge(_linear(tmp_path / "a", Path("someorg/somemodel")), tmp_path / "out")


def test_hub_id_resolved_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    repo = cache / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    write_tiny(snap, 1)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_tiny(tmp_path / "a", 0)
    result = alloy.merge(_linear(tmp_path / "a", Path("org/tiny")), tmp_path / "out")
    assert (result.out_dir / "model.safetensors").is_file()
    # a revision selects a snapshot by commit
    cfg = _linear(tmp_path / "a", Path("org/tiny"))
    cfg["models"][1]["model"] = "org/tiny@abc123"
    alloy.merge(cfg, tmp_path / "out2")


def test_directory_without_checkpoint(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty holds no checkpoint"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "empty"), tmp_path / "out")
    _no_output(tmp_path / "out")


def test_truncated_safetensors(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    f = tmp_path / "b" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"b/model.safetensors is truncated"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "out")
    _no_output(tmp_path / "out")


def test_tensor_missing_from_one_input(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    t = tiny_tensors(1)
    del t["model.layers.1.mlp.up_proj.weight"]
    write_tiny(tmp_path / "b", 1, tensors=t)
    with pytest.raises(IncompatibleModelsError) as e:
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "out")
    msg = str(e.value)
    row = next(line for line in msg.splitlines() if "model.layers.1.mlp.up_proj.weight" in line)
    assert row.split()[-2:] == ["missing", "blocks"] and "[8, 4]" in row
    assert "in a, missing from b" in msg and f"b = {tmp_path / 'b'}" in msg
    assert e.value.report is not None and not e.value.report.mergeable(allow_crimes=True)
    _no_output(tmp_path / "out")


def test_extra_tensor_in_one_input_is_not_dropped(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    t = tiny_tensors(1)
    t["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(4)
    write_tiny(tmp_path / "b", 1, tensors=t)
    with pytest.raises(IncompatibleModelsError, match="q_proj.bias"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "out")


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    t = tiny_tensors(1)
    t["model.embed_tokens.weight"] = torch.randn(12, 4)
    write_tiny(tmp_path / "b", 1, tensors=t)
    with pytest.raises(IncompatibleModelsError) as e:
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "out")
    msg = str(e.value)
    assert "model.embed_tokens.weight" in msg and "[10, 4]" in msg and "[12, 4]" in msg
    assert "vocabularies differ" in msg


def test_method_needing_base_without_one(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    cfg = _linear(tmp_path / "a", tmp_path / "b")
    cfg["merge_method"] = "task_arithmetic"
    with pytest.raises(ConfigError, match="needs a base model"):
        alloy.merge(cfg, tmp_path / "out")


def test_nan_in_output_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    t = tiny_tensors(1)
    t["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")
    write_tiny(tmp_path / "b", 1, tensors=t)
    with pytest.raises(MergeComputationError) as e:
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "out")
    assert "model.layers.2.mlp.up_proj.weight" in str(e.value) and "NaN/Inf" in str(e.value)
    _no_output(tmp_path / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_parent(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), ro / "out")
    finally:
        ro.chmod(0o700)


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    (tmp_path / "out").write_text("precious")
    with pytest.raises(OutputError, match="is a file"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "out")
    assert (tmp_path / "out").read_text() == "precious"


def test_output_under_a_read_only_filesystem_path(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    with pytest.raises(OutputError, match="cannot write into"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), Path("/proc/alloy-out"))


def test_existing_output_needs_force_and_inputs_are_never_overwritten(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="--force"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), out)
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces only an earlier Alloy output, never a directory of the user's files
    with pytest.raises(OutputError, match="not written by Alloy"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), out, force=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), out)
    first = (out / "model.safetensors").read_bytes()
    config = _linear(tmp_path / "a", tmp_path / "b")
    config["models"][0]["parameters"]["weight"] = 0.25
    alloy.merge(config, out, force=True)
    assert (out / "model.safetensors").is_file() and not (out / "keep.txt").exists()
    assert (out / "model.safetensors").read_bytes() != first
    before = (tmp_path / "a" / "model.safetensors").read_bytes()
    with pytest.raises(OutputError, match="overlaps the input model"):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), tmp_path / "a", force=True)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == before


def test_failed_merge_keeps_previous_output(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1)
    out = tmp_path / "out"
    alloy.merge(_linear(tmp_path / "a", tmp_path / "b"), out)
    first = (out / "model.safetensors").read_bytes()
    t = tiny_tensors(1)
    t["model.norm.weight"][0] = float("inf")
    write_tiny(tmp_path / "c", 1, tensors=t)
    with pytest.raises(MergeComputationError):
        alloy.merge(_linear(tmp_path / "a", tmp_path / "c"), out, force=True)
    assert (out / "model.safetensors").read_bytes() == first
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
