"""The merge report's distance from the base: measured on the merged tensors as written, each
value computed by hand from checkpoints built so that it is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny import read_dir, tiny_tensors, write_tiny

import alloy
from alloy.report.distance import summarize, warn_threshold


def _family(root: Path, deltas: list[float], odd_only: list[bool]) -> tuple[Path, list[Path]]:
    """A base whose every entry is 1.0 and fine-tunes adding ``delta`` to every entry (or to
    the odd flat indices only)."""
    shapes = {k: v.shape for k, v in tiny_tensors(0).items()}
    base = {k: torch.ones(s) for k, s in shapes.items()}
    write_tiny(root / "base", 0, tensors=base)
    paths = []
    for i, (d, odd) in enumerate(zip(deltas, odd_only)):
        t = {}
        for k, w in base.items():
            mask = (torch.arange(w.numel()) % 2 == 1).reshape(w.shape) if odd else 1.0
            t[k] = w + d * mask
        write_tiny(root / f"ft{i}", 0, tensors=t)
        paths.append(root / f"ft{i}")
    return root / "base", paths


def _ta(base: Path, fts: list[Path], weight: float, dtype: str = "float32") -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(base),
        "models": [{"model": str(p), "parameters": {"weight": weight}} for p in fts],
        "dtype": dtype,
    }


def _report(cfg: dict, out: Path) -> dict:
    alloy.merge(cfg, out)
    return json.loads((out / "report.json").read_text())


def test_task_arithmetic_distance_is_the_norm_of_the_summed_task_vectors(tmp_path: Path) -> None:
    # ft0 adds 0.1 everywhere, ft1 adds 0.1 on the odd entries: the sum is 0.2 on the odd
    # entries and 0.1 on the even ones, so ||merged - base||² / ||base||² = (0.04 + 0.01) / 2
    base, fts = _family(tmp_path, [0.1, 0.1], [False, True])
    rep = _report(_ta(base, fts, 1.0), tmp_path / "out")
    d = rep["distance"]
    assert d["base"] == str(base)
    assert d["merged"]["overall"] == pytest.approx(math.sqrt(0.025), rel=1e-6)
    assert [s["overall"] for s in d["sources"]] == pytest.approx([0.1, math.sqrt(0.005)], rel=1e-6)
    assert set(d["merged"]["layers"]) == {"0", "1", "2", "other"}
    # every layer has the same mix of entries (even tensor sizes), so the same distance
    for v in d["merged"]["layers"].values():
        assert v == pytest.approx(math.sqrt(0.025), rel=1e-6)
    assert d["ratio"] == pytest.approx(math.sqrt(0.025) / 0.1, rel=1e-6)  # 1.58
    assert d["threshold"] == 1.5 and d["warning"] is not None
    assert any(w.startswith("distance from the base: the merge moved") for w in rep["warnings"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Distance from the Base" in md and "| merged | 15.81% |" in md


def test_an_interpolation_stays_within_its_sources_and_does_not_warn(tmp_path: Path) -> None:
    base, fts = _family(tmp_path, [0.1, 0.1], [False, True])
    rep = _report(_ta(base, fts, 0.5), tmp_path / "out")
    d = rep["distance"]
    # half of each: 0.1 on the odd entries, 0.05 on the even ones
    assert d["merged"]["overall"] == pytest.approx(math.sqrt((0.01 + 0.0025) / 2), rel=1e-6)
    assert d["ratio"] < 1 and d["warning"] is None
    assert not any(w.startswith("distance") for w in rep["warnings"])


def test_the_distance_is_measured_in_the_output_dtype(tmp_path: Path) -> None:
    # 1 + 2 * 0.001 rounds to 1.0 in bfloat16 (its step at 1.0 is 2^-7): the stored merge does
    # not move, though each float32 source does by 0.1%
    base, fts = _family(tmp_path, [0.001, 0.001], [False, False])
    rep = _report(_ta(base, fts, 1.0, "bfloat16"), tmp_path / "out")
    d = rep["distance"]
    assert d["merged"]["overall"] == 0.0
    assert [s["overall"] for s in d["sources"]] == pytest.approx([0.001, 0.001], rel=1e-4)


def test_the_kernel_and_torch_give_the_same_distances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(3)
    tensors = [
        {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in tiny_tensors(1).items()}
        for _ in range(3)
    ]
    for name, t in zip(("base", "a", "b"), tensors):
        write_tiny(tmp_path / name, 0, tensors=t, dtype=torch.bfloat16)
    cfg = {
        "merge_method": "ties",
        "base_model": str(tmp_path / "base"),
        "models": [
            {"model": str(tmp_path / m), "parameters": {"weight": 1.0, "density": 0.5}}
            for m in ("a", "b")
        ],
        "dtype": "bfloat16",
    }
    import alloy.kernels
    from alloy.kernels.fused import distance as distance_kernel

    monkeypatch.setattr(alloy.kernels, "KERNEL_MIN", 0)  # the tiny tensors through the kernels

    def unused(*args: object) -> None:
        raise AssertionError("the TIES kernel measures the distance sums as it merges")

    with monkeypatch.context() as m:
        m.setattr(distance_kernel, "distance_sums", unused)
        fused = _report(cfg, tmp_path / "fused")["distance"]
    # float16 is written through float32: the report's own kernel measures the stored values
    half = _report({**cfg, "dtype": "float16"}, tmp_path / "half")["distance"]
    monkeypatch.setenv("ALLOY_KERNELS", "0")
    plain = _report(cfg, tmp_path / "plain")["distance"]
    plain_half = _report({**cfg, "dtype": "float16"}, tmp_path / "plain-half")["distance"]
    assert half["merged"]["overall"] == pytest.approx(plain_half["merged"]["overall"], rel=1e-9)
    assert half["merged"]["overall"] != plain["merged"]["overall"]  # other rounding
    assert fused["merged"]["overall"] == pytest.approx(plain["merged"]["overall"], rel=1e-9)
    for f, p in zip(fused["sources"], plain["sources"]):
        assert f["overall"] == pytest.approx(p["overall"], rel=1e-9)
        assert f["layers"] == pytest.approx(p["layers"], rel=1e-9)
    # and both are the distance of the written file
    written = read_dir(tmp_path / "fused")
    base = tensors[0]
    num = sum(float((written[k].double() - base[k].bfloat16().double()).pow(2).sum()) for k in base)
    den = sum(float(base[k].bfloat16().double().pow(2).sum()) for k in base)
    assert fused["merged"]["overall"] == pytest.approx(math.sqrt(num / den), rel=1e-9)


def test_a_merge_without_a_base_says_it_is_not_measured(tmp_path: Path) -> None:
    _base, fts = _family(tmp_path, [0.1, 0.1], [False, True])
    cfg = {
        "merge_method": "linear",
        "models": [{"model": str(p), "parameters": {"weight": 0.5}} for p in fts],
    }
    rep = _report(cfg, tmp_path / "out")
    assert rep["distance"] is None
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Distance from the Base" in md and "Not measured" in md


def test_the_threshold_grows_with_the_square_root_of_the_sources() -> None:
    assert warn_threshold(1) == 1.5 and warn_threshold(2) == 1.5
    assert warn_threshold(8) == pytest.approx(3.0)
    # eight unrelated task vectors of one size summed reach sqrt(8) = 2.83 times one: no warning
    merged = {"overall": math.sqrt(8) * 0.1, "layers": {}}
    sources = [{"model": f"m{i}", "overall": 0.1, "layers": {}} for i in range(8)]
    assert summarize("b", 1, merged, sources)["warning"] is None
    merged["overall"] = 0.31
    assert "3.10 times the farthest source" in summarize("b", 1, merged, sources)["warning"]
