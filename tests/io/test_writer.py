"""The streaming sharded writer: layout, index, chunked writes, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alloy.errors import UsageError
from alloy.io.sharding import parse_size, plan_shards, shard_file_names
from alloy.io.sources import TensorInfo
from alloy.io.writer import OutTensor, ShardedSafetensorsWriter


def _layout() -> list[OutTensor]:
    return [
        OutTensor("emb", TensorInfo((4, 3), torch.float32)),
        OutTensor("norm", TensorInfo((3,), torch.bfloat16)),
        OutTensor("head", TensorInfo((4, 3), torch.float16)),
    ]


def _write(d: Path, max_bytes: int) -> dict[str, torch.Tensor]:
    layout = _layout()
    shards = plan_shards([t.info.nbytes for t in layout], max_bytes)
    w = ShardedSafetensorsWriter(d, [[layout[i] for i in s] for s in shards])
    values = {
        "emb": torch.arange(12, dtype=torch.float32).reshape(4, 3),
        "norm": torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16),
        "head": -torch.arange(12, dtype=torch.float16).reshape(4, 3),
    }
    w.add("emb", values["emb"][:2])  # chunked: rows 0-1, then 2-3
    w.add("emb", values["emb"][2:])
    w.add("norm", values["norm"])
    w.add("head", values["head"])
    w.finish()
    return values


def test_sharded_output_loads_with_safetensors_and_has_index(tmp_path: Path) -> None:
    values = _write(tmp_path, max_bytes=48)  # emb (48 B) | norm + head (6 + 24 B)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 48 + 6 + 24
    assert index["weight_map"] == {
        "emb": "model-00001-of-00002.safetensors",
        "head": "model-00002-of-00002.safetensors",
        "norm": "model-00002-of-00002.safetensors",
    }
    loaded = {}
    for f in files[:2]:
        loaded.update(load_file(tmp_path / f))
    for k, v in values.items():
        assert torch.equal(loaded[k], v)


def test_single_shard_is_model_safetensors(tmp_path: Path) -> None:
    _write(tmp_path, max_bytes=10**9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_byte_identical_runs(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _write(tmp_path / name, 48)
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()


def test_out_of_order_write_is_refused(tmp_path: Path) -> None:
    w = ShardedSafetensorsWriter(tmp_path, [_layout()])
    with pytest.raises(Exception, match="expected next"):
        w.add("norm", torch.zeros(3, dtype=torch.bfloat16))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500MB", 500_000_000),
        ("2GB", 2_000_000_000),
        ("1.5GiB", 1_610_612_736),
        ("123456789", 123_456_789),
        ("5B", 5_000_000_000),  # mergekit's default spelling: 5 billion
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(UsageError, match="500MB"):
        parse_size("lots")


@pytest.mark.parametrize("text", ["5XB", "0", "-1", "nanGB", "nan", "0.0000001", "", 0, -4096])
def test_parse_size_rejects_what_is_no_positive_size(text: str | int) -> None:
    with pytest.raises(UsageError, match="out-shard-size"):
        parse_size(text)


def test_plan_shards_and_names() -> None:
    assert plan_shards([5, 5, 5, 20, 1], 10) == [[0, 1], [2], [3], [4]]
    assert shard_file_names(1) == ["model.safetensors"]
    assert shard_file_names(3)[2] == "model-00003-of-00003.safetensors"


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "through-the-cache"])
def test_shard_file_writes_every_byte_across_blocks_and_flushes(
    tmp_path: Path, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from alloy.io import writer

    if not direct:
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    g = torch.Generator().manual_seed(0)
    # sizes that end inside a block, on a block, and past the 16 MiB stage
    sizes = [108, 5000, 4096 - 5108 % 4096, (16 << 20) + 3, 1, 4095, 70000]
    parts = [
        torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).numpy().tobytes() for n in sizes
    ]
    path = tmp_path / "shard.safetensors"
    f = writer._ShardFile(path)
    expected = b""
    for i, part in enumerate(parts):
        f.write(part)
        expected += part
        assert f.tell() == len(expected)
        if i % 2:  # a flush puts the partial block on disk, the file exactly as long
            f.flush()
            assert path.read_bytes() == expected
    f.flush()
    f.close()
    assert path.read_bytes() == expected
    if not direct:
        assert not f._direct


def test_a_full_disk_is_an_error_naming_the_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from alloy.errors import OutputError
    from alloy.io import writer

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.os, "fsync", full)  # where a buffered file's ENOSPC surfaces
    with pytest.raises(OutputError, match=r"cannot write .*model\.safetensors.*No space left"):
        _write(tmp_path, 1 << 20)
