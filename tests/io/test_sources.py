"""Lazy checkpoint reading: safetensors (single, sharded), .bin, and corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alloy.errors import CheckpointError
from alloy.io.sources import MemorySource, SafetensorsFile, TorchBinCheckpoint, open_weights


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(6, 5, generator=g),
        "b.weight": torch.randn(3, generator=g).to(torch.bfloat16),
        "c.ids": torch.arange(7, dtype=torch.int64),
    }


def test_single_file_reads_tensors_and_rows(tmp_path: Path) -> None:
    t = _tensors()
    save_file(t, tmp_path / "model.safetensors")
    src = open_weights(tmp_path)
    assert sorted(src.names()) == sorted(t)
    for k, v in t.items():
        assert torch.equal(src.get(k), v)
        assert src.info(k).shape == tuple(v.shape) and src.info(k).dtype == v.dtype
    assert torch.equal(src.get("a.weight", (2, 5)), t["a.weight"][2:5])


def test_sharded_with_index(tmp_path: Path) -> None:
    t = _tensors()
    save_file({"a.weight": t["a.weight"]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file(
        {"b.weight": t["b.weight"], "c.ids": t["c.ids"]},
        tmp_path / "model-00002-of-00002.safetensors",
    )
    index = {
        "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors",
            "c.ids": "model-00002-of-00002.safetensors",
        }
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    src = open_weights(tmp_path)
    assert torch.equal(src.get("b.weight"), t["b.weight"])
    assert torch.equal(src.get("a.weight"), t["a.weight"])


def test_index_pointing_to_missing_shard(tmp_path: Path) -> None:
    index = {"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors.*missing"):
        open_weights(tmp_path)


def test_truncated_file_names_file_and_tensor(tmp_path: Path) -> None:
    save_file(_tensors(), tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointError) as e:
        open_weights(tmp_path)
    assert "model.safetensors is truncated" in str(e.value)
    assert "tensor" in str(e.value) and "Download it again" in str(e.value)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}"
    )
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        SafetensorsFile(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="truncated"):
        SafetensorsFile(tmp_path / "model.safetensors")


def test_directory_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="holds no checkpoint.*config.json"):
        open_weights(tmp_path)


def test_bin_single_and_sharded(tmp_path: Path) -> None:
    t = _tensors()
    one = tmp_path / "one"
    one.mkdir()
    torch.save(t, one / "pytorch_model.bin")
    src = open_weights(one)
    assert isinstance(src, TorchBinCheckpoint)
    for k, v in t.items():
        assert torch.equal(src.get(k), v)
    two = tmp_path / "two"
    two.mkdir()
    torch.save({"a.weight": t["a.weight"]}, two / "pytorch_model-00001-of-00002.bin")
    torch.save({"b.weight": t["b.weight"]}, two / "pytorch_model-00002-of-00002.bin")
    (two / "pytorch_model.bin.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "a.weight": "pytorch_model-00001-of-00002.bin",
                    "b.weight": "pytorch_model-00002-of-00002.bin",
                }
            }
        )
    )
    src2 = open_weights(two)
    assert torch.equal(src2.get("b.weight"), t["b.weight"])
    assert torch.equal(src2.get("a.weight", (1, 3)), t["a.weight"][1:3])
    assert src2.info("a.weight").shape == (6, 5)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this must never run",))


def test_bin_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"a.weight": torch.zeros(2), "evil": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        open_weights(tmp_path)


def test_memory_source() -> None:
    src = MemorySource({"x": torch.ones(4, 2)})
    assert src.names() == ["x"] and src.info("x").nbytes == 32
    assert src.get("x", (1, 3)).shape == (2, 2)


def _mapped(path: Path) -> bool:
    """Whether this process holds a map of ``path`` (Linux)."""
    return str(path) in Path("/proc/self/maps").read_text()


def _evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (a no-op on tmpfs)."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cached_pages(path: Path) -> int:
    """How many of ``path``'s pages are in the page cache (``mincore`` on a private map)."""
    import ctypes
    import mmap

    import numpy as np

    with open(path, "rb") as fh:
        mm = mmap.mmap(
            fh.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
    vec = np.zeros(-(-len(mm) // mmap.PAGESIZE), np.uint8)
    anchor = ctypes.c_char.from_buffer(mm)
    mincore = ctypes.CDLL(None).mincore
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert mincore(ctypes.addressof(anchor), len(mm), vec.ctypes.data) == 0
    del anchor
    mm.close()
    return int(np.count_nonzero(vec & 1))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_cached_tensors_are_mapped_copy_on_write_and_uncached_ones_read(tmp_path: Path) -> None:
    import gc

    g = torch.Generator().manual_seed(1)
    big = torch.randn(512, 1024, generator=g).to(torch.bfloat16)  # 1 MiB: mapped when cached
    small = torch.randn(64, generator=g)
    path = tmp_path / "model.safetensors"
    save_file({"big": big, "small": small}, path)
    before = path.read_bytes()  # and now every page of it is in the page cache
    f = SafetensorsFile(path)

    got = f.get("big")
    assert torch.equal(got, big)
    assert _mapped(path)
    assert torch.equal(f.get("big", (100, 200)), big[100:200])
    got.mul_(0)  # a write lands on a private copy of the page, never in the file
    assert path.read_bytes() == before
    assert torch.equal(f.get("big"), big)
    del got
    gc.collect()
    assert not _mapped(path)  # unmapped with the last view
    assert torch.equal(f.get("small"), small) and not _mapped(path)  # small: read

    _evict(path)  # the tensor is read, not mapped (the pages would fault in later, on
    if _cached_pages(path) > 0:  # whichever thread touches them first)
        pytest.skip("this file system keeps the pages (tmpfs)")
    cold = f.get("big")
    assert torch.equal(cold, big)
    assert not _mapped(path)
    f.close()


def test_file_truncated_after_opening_names_the_tensor(tmp_path: Path) -> None:
    big = torch.ones(1024, 1024)
    path = tmp_path / "model.safetensors"
    save_file({"big": big}, path)
    f = SafetensorsFile(path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 4096)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*'big'.*truncated"):
        f.get("big")


def test_direct_reads_return_the_same_tensors_and_are_chosen_past_the_memory(
    tmp_path: Path,
) -> None:
    from alloy.io.sources import read_past_cache

    g = torch.Generator().manual_seed(2)
    t = {  # an odd-sized tensor first, so the large ones start inside a block
        "a": torch.randn(3, generator=g),
        "big": torch.randn(700, 1024, generator=g).to(torch.bfloat16),
        "big32": torch.randn(300, 1001, generator=g),
    }
    save_file(t, tmp_path / "model.safetensors")
    src = open_weights(tmp_path)
    assert not read_past_cache([src], available=1 << 40)  # fits: through the cache
    assert read_past_cache([src], available=1 << 10)  # past the memory: direct
    (f,) = src.files()  # type: ignore[union-attr]
    assert f.direct
    _evict(tmp_path / "model.safetensors")  # else the cached pages are mapped, not read
    for name, v in t.items():
        assert torch.equal(src.get(name), v)
    assert torch.equal(src.get("big", (123, 456)), t["big"][123:456])
    assert torch.equal(src.get("big32", (7, 299)), t["big32"][7:299])
    if f._direct_fd is None:  # this file system refused O_DIRECT: the reads went through
        pytest.skip("O_DIRECT not supported here")  # the cache, checked above all the same
    assert f.direct  # no fallback was needed
