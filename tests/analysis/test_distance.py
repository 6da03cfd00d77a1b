"""Distance from the base: each source's in `alloy analyze`, a merge's predicted by
`alloy.analysis.distance` and measured by the merge report, against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from family import family, noise

import alloy
from alloy.analysis.analyze import analyze
from alloy.analysis.distance import predict
from alloy.cli import main


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return float(torch.cat([v.reshape(-1).double() for v in tensors.values()]).norm())


def _measured(cfg: dict, out: Path) -> float:
    alloy.merge(cfg, out)
    return float(json.loads((out / "report.json").read_text())["distance"]["merged"]["overall"])


def test_analyze_reports_each_sources_distance(tmp_path: Path) -> None:
    base, fts, b, tensors = family(tmp_path, [noise(1, 0.05), noise(2, 0.1)])
    expected = [_norm({k: t[k] - b[k] for k in b}) / _norm(b) for t in tensors]
    r = CliRunner().invoke(main, ["analyze", "--json", "--base", str(base), *map(str, fts)])
    assert r.exit_code == 0, r.output
    dist = json.loads(r.output)["distance"]
    assert [d["model"] for d in dist] == [str(p) for p in fts]
    assert [d["overall"] for d in dist] == pytest.approx(expected, rel=1e-5)
    layer0 = [k for k in b if ".layers.0." in k]
    for d, t in zip(dist, tensors):
        got = _norm({k: t[k] - b[k] for k in layer0}) / _norm({k: b[k] for k in layer0})
        assert d["layers"]["0"] == pytest.approx(got, rel=1e-5)
    text = CliRunner().invoke(main, ["analyze", "--base", str(base), *map(str, fts)]).output
    assert "distance from the base" in text
    assert f"A {100 * expected[0]:.1f}%" in text and f"B {100 * expected[1]:.1f}%" in text


def test_linear_prediction_is_exact(tmp_path: Path) -> None:
    base, fts, b, tensors = family(tmp_path, [noise(1, 0.05), noise(2, 0.1)])
    a = analyze([str(p) for p in fts], str(base))
    cfg = {"models": [{"model": str(p), "parameters": {"weight": w}} for p, w in zip(fts, (1, 3))]}
    # normalized weights 1/4, 3/4
    mix = {k: 0.25 * (tensors[0][k] - b[k]) + 0.75 * (tensors[1][k] - b[k]) for k in b}
    p = predict(a, "linear", cfg)
    assert p is not None and p["kind"] == "exact"
    assert p["overall"] == pytest.approx(_norm(mix) / _norm(b), rel=1e-5)


def test_slerp_estimate_is_within_its_margin(tmp_path: Path) -> None:
    base, fts, b, tensors = family(tmp_path, [noise(1, 0.2), noise(2, 0.3)])
    a = analyze([str(p) for p in fts], str(base))
    cfg = {
        "merge_method": "slerp",
        "base_model": str(fts[0]),
        "models": [{"model": str(p)} for p in fts],
        "parameters": {"t": 0.4},
    }
    p = predict(a, "slerp", cfg)
    assert p is not None and p["kind"] == "estimate" and p["margin"] > 0
    # the merge report measures from the config's base_model (here the t = 0 endpoint), so
    # measure the written merge from the real base by hand
    alloy.merge(cfg, tmp_path / "out")
    from tiny import read_dir

    merged = read_dir(tmp_path / "out")
    truth = _norm({k: merged[k] - b[k] for k in b}) / _norm(b)
    lerp = _norm({k: 0.6 * (tensors[0][k] - b[k]) + 0.4 * (tensors[1][k] - b[k]) for k in b})
    assert p["overall"] == pytest.approx(lerp / _norm(b), rel=1e-5)
    assert abs(truth - p["overall"]) <= p["margin"]


def test_ties_prediction_bounds_the_measured_distance(tmp_path: Path) -> None:
    base, fts, _, _ = family(tmp_path, [noise(1, 0.05), noise(2, 0.05)])
    a = analyze([str(p) for p in fts], str(base))
    cfg = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(p), "parameters": {"weight": 1.0, "density": 0.5}} for p in fts],
        "dtype": "float32",
    }
    p = predict(a, "ties", cfg)
    assert p is not None and p["kind"] == "bound"
    measured = _measured(cfg, tmp_path / "out")
    # an upper bound, not far above: at density 0.5 the kept sets overlap on about a quarter
    assert measured <= p["overall"] <= 1.25 * measured
