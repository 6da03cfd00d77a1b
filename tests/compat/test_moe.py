"""TIES over a Mixtral-style mixture of experts against mergekit 0.1.5 (issue 14: 5e-2).

The cause is the tensor layout, not the arithmetic. A Mixtral checkpoint stores one matrix per
expert and projection (``experts.{e}.w1/w2/w3``); mergekit 0.1.5 reads it through transformers
5's conversion mapping, which fuses all experts' w1 and w3 into one [E, 2I, H] tensor
(``experts.gate_up_proj``) and the w2 into one [E, H, I] (``experts.down_proj``), and merges those.
Alloy merges the matrices the checkpoint holds and writes them back as they were (transformers
5 loads both layouts). Every method that works element by element gives the same numbers in
both layouts; a method that reduces over a whole tensor does not: TIES keeps the top ``density``
fraction of |delta| of each tensor, so mergekit ranks all experts (and gate against up) together
and Alloy ranks each expert's matrix on its own. Each tool is exactly TIES on its own layout
(checked against a reference TIES written here); every tensor outside the experts is equal.
The same holds for model_stock (one cosine per tensor), slerp (one angle per tensor), DELLA,
breadcrumbs and SCE: `docs/compatibility.md` row 33.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from checkpoints import load_state_dict
from compat.moe import fuse, is_expert
from compat.standins import family
from compat.test_corpus import rel_err, run_alloy, run_mergekit

pytestmark = pytest.mark.parity

DENSITY, WEIGHTS = 0.5, (0.6, 0.4)


def reference_ties(base: torch.Tensor, fts: list[torch.Tensor]) -> torch.Tensor:
    """TIES (Yadav et al. 2023) on one tensor: keep each task vector's top-k |delta|, elect the
    sign of the weighted sum, average the agreeing weighted entries (mergekit's ``normalize``)."""
    trimmed = []
    for ft in fts:
        tv = (ft - base).double()
        k = max(1, int(DENSITY * tv.numel()))
        cut = tv.abs().flatten().kthvalue(tv.numel() - k + 1).values
        trimmed.append(tv * (tv.abs() >= cut))
    weighted = [w * t for w, t in zip(WEIGHTS, trimmed, strict=True)]
    sign = torch.where(sum(weighted) >= 0, 1.0, -1.0)
    agree = [torch.sign(x) == sign for x in weighted]
    mixed = sum(x * a for x, a in zip(weighted, agree, strict=True))
    divisor = sum(w * a for w, a in zip(WEIGHTS, agree, strict=True))
    return base.double() + mixed / torch.where(divisor == 0, 1.0, divisor)


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, torch.Tensor]], ...]:
    root = tmp_path_factory.mktemp("moe")
    paths = family(root / "standins", "mixtral", 2, 2)
    config = {
        "merge_method": "ties",
        "base_model": str(paths[0]),
        "models": [
            {"model": str(p), "parameters": {"weight": w, "density": DENSITY}}
            for p, w in zip(paths[1:], WEIGHTS, strict=True)
        ],
        "dtype": "float32",
    }
    text = yaml.safe_dump(config)
    ours = load_state_dict(run_alloy(text, root / "alloy"))
    theirs = load_state_dict(run_mergekit(text, root / "mergekit"))
    inputs = [load_state_dict(p) for p in paths]
    return [ours, theirs], inputs


def test_each_tool_is_ties_on_its_own_layout(
    merged: tuple[list[dict[str, torch.Tensor]], ...],
) -> None:
    (ours, theirs), (base, *fts) = merged
    assert any(is_expert(n) for n in ours) and any(is_expert(n) for n in theirs)
    for name in ours:  # per-expert matrices, ranked one by one
        expected = reference_ties(base[name], [ft[name] for ft in fts])
        assert rel_err(ours[name], expected) <= 1e-6, name
    fused_base, fused_fts = fuse(base), [fuse(ft) for ft in fts]
    for name in theirs:  # fused tensors, all experts ranked together
        expected = reference_ties(fused_base[name], [ft[name] for ft in fused_fts])
        assert rel_err(theirs[name], expected) <= 1e-6, name


def test_only_the_expert_tensors_differ(merged: tuple[list[dict[str, torch.Tensor]], ...]) -> None:
    (ours, theirs), _ = merged
    fused = fuse(ours)
    assert sorted(fused) == sorted(theirs)
    errors = {n: rel_err(fused[n], theirs[n]) for n in theirs}
    assert all(e <= 1e-6 for n, e in errors.items() if not is_expert(n)), errors
    expert_errors = [e for n, e in errors.items() if is_expert(n)]
    assert min(expert_errors) > 1e-3  # the selection scope changes which entries survive


def test_elementwise_methods_agree_in_either_layout(tmp_path: Path) -> None:
    """task_arithmetic is the same in both layouts: Alloy's output, fused, is mergekit's."""
    paths = family(tmp_path / "standins", "mixtral", 2, 2)
    config = {
        "merge_method": "task_arithmetic",
        "base_model": str(paths[0]),
        "models": [{"model": str(p), "parameters": {"weight": 0.5}} for p in paths[1:]],
        "dtype": "float32",
    }
    text = yaml.safe_dump(config)
    ours = fuse(load_state_dict(run_alloy(text, tmp_path / "alloy")))
    theirs = load_state_dict(run_mergekit(text, tmp_path / "mergekit"))
    assert sorted(ours) == sorted(theirs)
    assert max(rel_err(ours[n], theirs[n]) for n in theirs) <= 1e-6
