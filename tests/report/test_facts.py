"""Task-vector facts against a naive computation over whole tensors, and the bounded sample."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny import tiny_tensors, write_tiny

from alloy._merging import merge_facts
from alloy.api import open_config_models
from alloy.config.load import load_config
from alloy.plan.planner import build_plan
from alloy.report.facts import BLOCK_ELEMENTS, SAMPLE_BLOCKS, sample_rows
from alloy.report.rationale import fact_sentences


def _facts(config: dict) -> dict:
    """The facts `alloy.merge` reports for ``config``, read from its opened models."""
    cfg = load_config(config)
    with open_config_models(cfg) as models:
        return merge_facts(build_plan(cfg, models), models.sources())


def _models(tmp_path: Path, extra: dict[str, torch.Tensor] | None = None) -> list[Path]:
    base = tiny_tensors(0) | (extra or {})
    out = [tmp_path / "base"]
    write_tiny(out[0], 0, tensors=base)
    for i, name in enumerate(("a", "b")):
        g = torch.Generator().manual_seed(100 + i)
        t = {k: v + (0.1 + 0.2 * i) * torch.randn(v.shape, generator=g) for k, v in base.items()}
        # some entries left unchanged, so "changed by two or more" is not every entry
        t = {
            k: torch.where(torch.rand(v.shape, generator=g) < 0.3, base[k], v) for k, v in t.items()
        }
        write_tiny(tmp_path / name, 0, tensors=t)
        out.append(tmp_path / name)
    return out


def _flat(path: Path) -> torch.Tensor:
    from tiny import read_dir

    t = read_dir(path)
    return torch.cat([t[k].double().reshape(-1) for k in sorted(t)])


def _ties(base: Path, a: Path, b: Path) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(b), "parameters": {"weight": 1.0, "density": 0.5}},
        ],
    }


def test_facts_with_base_equal_the_naive_computation(tmp_path: Path) -> None:
    base, a, b = _models(tmp_path)
    facts = _facts(_ties(base, a, b))
    w0, wa, wb = _flat(base), _flat(a), _flat(b)
    da, db = wa - w0, wb - w0
    assert facts["exact"] and facts["sampled_elements"] == w0.numel()
    rel = {i["model"]: i["relative_norm"] for i in facts["inputs"]}
    assert rel[str(a)] == pytest.approx(float(da.norm() / w0.norm()), rel=1e-6)
    assert rel[str(b)] == pytest.approx(float(db.norm() / w0.norm()), rel=1e-6)
    cos = float(da @ db / (da.norm() * db.norm()))
    assert facts["pairs"][0]["cosine"] == pytest.approx(cos, rel=1e-6)
    both = (da != 0) & (db != 0)
    conflict = int((both & (da.sign() != db.sign())).sum()) / int(both.sum())
    assert facts["sign_conflict"] == pytest.approx(conflict, rel=1e-9)
    # per layer: layer 1's tensors only
    names = sorted(tiny_tensors(0))
    idx = []
    offset = 0
    for k, v in sorted(tiny_tensors(0).items()):
        if k.startswith("model.layers.1."):
            idx += range(offset, offset + v.numel())
        offset += v.numel()
    assert len(names) > 3
    sel = torch.tensor(idx)
    per_layer = facts["layers"]["relative_norm"][str(a)]
    layer1 = facts["layers"]["labels"].index("1")
    assert per_layer[layer1] == pytest.approx(float(da[sel].norm() / w0[sel].norm()), rel=1e-6)
    text = " ".join(fact_sentences(facts))
    assert f"{100 * conflict:.0f}%" in text and f"{cos:.3f}" in text


def test_facts_without_base_use_the_mean(tmp_path: Path) -> None:
    _, a, b = _models(tmp_path)
    cfg = {
        "merge_method": "linear",
        "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in (a, b)],
    }
    facts = _facts(cfg)
    wa, wb = _flat(a), _flat(b)
    m = (wa + wb) / 2
    assert not facts["with_base"] and facts["sign_conflict"] is None
    dist = {i["model"]: i["relative_distance_to_mean"] for i in facts["inputs"]}
    assert dist[str(a)] == pytest.approx(float((wa - m).norm() / m.norm()), rel=1e-6)
    assert facts["pairs"][0]["cosine"] == pytest.approx(
        float(wa @ wb / (wa.norm() * wb.norm())), rel=1e-6
    )


def test_large_tensors_are_sampled_in_bounded_blocks(tmp_path: Path) -> None:
    assert sample_rows((64, 32)) is None
    rows = sample_rows((300, 512))
    assert rows is not None and len(rows) == SAMPLE_BLOCKS
    assert rows[0][0] == 0 and rows[-1][1] == 300
    assert all(e - s == BLOCK_ELEMENTS // 512 for s, e in rows)
    # small values, so the big tensor's relative delta differs from the small tensors': an
    # estimate that weighed the sample like the small tensors would be off by ~20%
    g = torch.Generator().manual_seed(3)
    big = {"model.layers.0.mlp.down_proj.weight": 0.1 * torch.randn(300, 512, generator=g)}
    base, a, b = _models(tmp_path, big)
    facts = _facts(_ties(base, a, b))
    assert not facts["exact"]
    small = sum(v.numel() for v in tiny_tensors(0).values())
    assert facts["sampled_elements"] == small + SAMPLE_BLOCKS * (BLOCK_ELEMENTS // 512) * 512
    w0, wa = _flat(base), _flat(a)
    exact = float((wa - w0).norm() / w0.norm())
    estimate = next(i["relative_norm"] for i in facts["inputs"] if i["model"] == str(a))
    assert estimate == pytest.approx(exact, rel=0.03)
    assert not math.isclose(estimate, exact, rel_tol=1e-9)  # it is an estimate
