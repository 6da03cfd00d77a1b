"""`alloy analyze` on tiny checkpoints against naive whole-model computations."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from family import family, noise
from tiny import tiny_tensors, write_tiny

from alloy.analysis.analyze import POST, PRE, analyze
from alloy.cli import main
from alloy.errors import CheckpointError, IncompatibleModelsError


def _cat(tensors: dict[str, torch.Tensor], names: list[str] | None = None) -> torch.Tensor:
    return torch.cat([tensors[k].reshape(-1).double() for k in names or sorted(tensors)])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    return family(tmp_path_factory.mktemp("pair"), [noise(1, 0.05), noise(2, 0.05)])


def test_totals_layers_and_kinds_match_naive_sums(pair: tuple) -> None:
    base_path, paths, b, fts = pair
    a = analyze([str(p) for p in paths], str(base_path))
    d1, d2, w = _cat(fts[0]) - _cat(b), _cat(fts[1]) - _cat(b), _cat(b)
    m = a.metrics(a.total)
    assert m["norm"][0] == pytest.approx(float(d1.norm()), rel=1e-5)
    assert m["relative_norm"][1] == pytest.approx(float(d2.norm() / w.norm()), rel=1e-5)
    assert m["cosine"][0] == pytest.approx(float(d1 @ d2 / (d1.norm() * d2.norm())), abs=1e-5)
    assert m["changed"][0] == pytest.approx(float((d1 != 0).double().mean()), rel=1e-6)
    assert a.total.tensors == len(b) and a.total.numel == w.numel()
    # layer 2 holds exactly the tensors of layer 2
    names2 = [k for k in b if k.startswith("model.layers.2.")]
    l2 = a.metrics(a.layers[2])
    dl = _cat(fts[0], names2) - _cat(b, names2)
    assert l2["norm"][0] == pytest.approx(float(dl.norm()), rel=1e-5) and a.layers[2].tensors == 3
    assert set(a.groups) == {PRE, 0, 1, 2, 3, POST}
    assert set(a.kinds) == {"embeddings", "norms", "attention", "mlp"}
    assert a.kinds["attention"].tensors == 4 and a.kinds["embeddings"].tensors == 2
    # independent dense noise: about half of the doubly kept entries disagree in sign
    assert 0.4 < m["conflict"] < 0.6 and 0.2 < m["overlap"] < 0.3


def test_workers_and_sampling(pair: tuple) -> None:
    base_path, paths, _, _ = pair
    refs = [str(p) for p in paths]
    one = analyze(refs, str(base_path), workers=1).to_dict()
    two = analyze(refs, str(base_path), workers=2).to_dict()
    assert one["total"] == two["total"] and one["tensors"] == two["tensors"]
    s1 = analyze(refs, str(base_path), sample=0.3, seed=1)
    s1b = analyze(refs, str(base_path), sample=0.3, seed=1)
    s2 = analyze(refs, str(base_path), sample=0.3, seed=2)
    assert s1.to_dict()["total"] == s1b.to_dict()["total"]
    assert s1.to_dict()["total"] != s2.to_dict()["total"]
    up = next(t for t in s1.tensors if t.name == "model.layers.0.mlp.up_proj.weight")
    # 64 rows in 8 blocks of 8: ceil(0.3 * 8) = 3 blocks
    assert up.rows_read == 24 and up.sums.numel == pytest.approx(64 * 32)
    norm = next(t for t in s1.tensors if t.name == "model.norm.weight")
    assert norm.rows_read is None  # vectors are read whole
    # ratios estimated from a 30% sample stay close to the exact ones
    exact = one["total"]["relative_norm"][0]
    assert s1.metrics(s1.total)["relative_norm"][0] == pytest.approx(exact, rel=0.1)


def test_without_base_cosine_and_angle_of_the_weights(tmp_path: Path) -> None:
    _, paths, _, fts = family(tmp_path, [noise(1, 0.5), noise(2, 0.5)], base=False)
    a = analyze([str(p) for p in paths])
    w1, w2 = _cat(fts[0]), _cat(fts[1])
    cos = float(w1 @ w2 / (w1.norm() * w2.norm()))
    m = a.metrics(a.total)
    assert m["cosine"][0] == pytest.approx(cos, abs=1e-6)
    assert m["angle_deg"][0] == pytest.approx(math.degrees(math.acos(cos)), abs=1e-3)
    assert "conflict" not in m and not a.has_base


def test_tied_head_and_errors(tmp_path: Path) -> None:
    write_tiny(tmp_path / "base", 0, tied=True)
    write_tiny(tmp_path / "untied", 1)
    a = analyze([str(tmp_path / "untied")], str(tmp_path / "base"))
    assert "lm_head.weight" in [t.name for t in a.tensors]  # the base's embedding stands in
    write_tiny(tmp_path / "deep", 2, layers=4)
    with pytest.raises(IncompatibleModelsError, match="model.layers"):
        analyze([str(tmp_path / "deep")], str(tmp_path / "untied"))
    t = tiny_tensors(3)
    t["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    write_tiny(tmp_path / "nan", 3, tensors=t)
    for workers in (1, 2):  # in this process, and from a worker process
        with pytest.raises(CheckpointError, match=r"model.layers.1.mlp.up_proj.weight.*nan.*NaN"):
            analyze([str(tmp_path / "nan")], str(tmp_path / "untied"), workers=workers)


def test_analyze_command_json_table_and_plots(pair: tuple, tmp_path: Path) -> None:
    base_path, paths, _, _ = pair
    args = ["analyze", "--base", str(base_path), *map(str, paths)]
    r = CliRunner().invoke(main, [*args, "--json", "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["pairs"] == [[0, 1]] and len(data["tensors"]) == 15
    assert set(data["layers"]) == {"pre", "0", "1", "2", "3", "post"}
    r2 = CliRunner().invoke(main, [*args, "--plots", str(tmp_path / "plots")])
    assert r2.exit_code == 0, r2.output
    assert "per layer:" in r2.output and "conflict@0.5" in r2.output
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == [
        "changed.png",
        "concentration.png",
        "conflict.png",
        "cosine.png",
        "relative_norm.png",
    ]
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    bad = CliRunner().invoke(main, [*args, "--density", "0"])
    assert bad.exit_code == 1 and "density (`--density`) must be in (0, 1]" in bad.output


def test_merge_path_does_not_import_matplotlib_or_transformers() -> None:
    code = (
        "import sys, alloy, alloy.cli, alloy.api, alloy.analysis.analyze, alloy.analysis.recommend;"
        "bad = [m for m in ('matplotlib', 'transformers', 'peft') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
