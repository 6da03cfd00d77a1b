"""bench/make_checkpoints.py writes safetensors shards itself (header from the shapes, then one
tensor at a time): safetensors must read them back as the tensors drawn, and a fine-tune built
on a stored base must hold the same bits as one built by drawing the base again."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import make_checkpoints as mc

SHARD = [("a.weight", (3, 5)), ("norm.weight", (7,)), ("b.weight", (4, 2))]
BASE, FT = mc.MODELS[0], mc.MODELS[1]


def read_all(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (a safe_open, not a dict)


def test_streamed_shard_reads_back_as_save_file_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    assert mc.write_shard(BASE, SHARD, path, None) == sum(mc.tensor_bytes(d) for _, d in SHARD)
    assert path.stat().st_size == mc.shard_size(SHARD)
    expected = {name: mc.model_tensor(BASE, name, dims) for name, dims in SHARD}
    save_file(expected, str(tmp_path / "ref.safetensors"))
    ours, ref = read_all(path), read_all(tmp_path / "ref.safetensors")
    assert ours.keys() == ref.keys() == expected.keys()
    for name, tensor in ref.items():
        assert ours[name].dtype == torch.bfloat16
        assert torch.equal(ours[name], tensor), name


def test_fine_tune_from_stored_base_is_the_drawn_one(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    mc.write_shard(BASE, SHARD, base_dir / "m.safetensors", None)
    weight_map = {name: "m.safetensors" for name, _ in SHARD}
    mc.write_json(base_dir / mc.INDEX_NAME, {"metadata": {}, "weight_map": weight_map})
    for name, dims in SHARD:
        stored = mc.model_tensor(FT, name, dims, base_dir)
        drawn = mc.model_tensor(FT, name, dims)
        assert torch.equal(stored, drawn), name
        assert not torch.equal(stored, mc.model_tensor(BASE, name, dims)), name


def test_interrupted_shard_is_rewritten_complete_one_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    mc.write_shard(BASE, SHARD, path, None)
    complete = path.read_bytes()
    path.write_bytes(complete[: len(complete) // 2])  # as a killed run leaves it
    mc.write_shard(BASE, SHARD, path, None)
    assert path.read_bytes() == complete
    before = path.stat().st_mtime_ns
    mc.write_shard(BASE, SHARD, path, None)  # complete: kept, not written again
    assert path.stat().st_mtime_ns == before
