"""The corpus of published mergekit recipes (`tests/compat/recipes/`, each with its source), run
on tiny stand-ins of the recipe's architecture and layer count by mergekit 0.1.5 (in-process)
and by Alloy: every recipe mergekit runs, Alloy runs with the same tensors (float32, relative
error <= 1e-4 per tensor), or refuses for a reason `docs/compatibility.md` lists.

Recipes whose merge is random (DARE, DELLA) run as published in both tools (both must succeed
and write the same tensor names and shapes) and are compared with every ``density`` set to 1,
where neither drops anything (the tools draw their masks differently by design).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from checkpoints import load_state_dict
from compat.corpus import (
    RANDOM_METHODS,
    Recipe,
    all_recipes,
    rewrite,
    standin_mapping,
    with_density_one,
)
from compat.moe import fuse, is_expert

pytestmark = [pytest.mark.parity, pytest.mark.slow]

# Features Alloy does not have yet: a recipe that needs one expects Alloy's refusal (the reason
# in PENDING_REFUSAL). Empty since tokenizer union landed: the union recipes run in both tools.
PENDING: set[str] = set()
PENDING_REFUSAL = {"tokenizer-union": "union"}

REL_TOL = 1e-4
SEED = 1234
RECIPES = all_recipes()
COMPATIBILITY = Path(__file__).parents[2] / "docs" / "compatibility.md"


def run_mergekit(text: str, out: Path) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(copy_tokenizer=False, quiet=True, random_seed=SEED, device="cpu")
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(out), options=options)
    return out


def run_alloy(text: str, out: Path) -> Path:
    import alloy

    config = out.with_suffix(".yml")
    config.write_text(text)
    alloy.merge(str(config), out, random_seed=SEED, copy_tokenizer=False)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).norm() / max(float(b64.norm()), 1e-30))


# Methods that work element by element: the same numbers in Mixtral's per-expert and fused
# layouts (the others reduce over a tensor, so the layout matters: test_moe.py).
ELEMENTWISE = {"linear", "task_arithmetic", "passthrough", "nearswap"}


def compare(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], recipe: Recipe
) -> float:
    """Same names and shapes; returns the largest relative error of a tensor. Mixtral outputs
    are compared in mergekit's fused layout, and their expert tensors only by shape unless the
    method works element by element (`docs/compatibility.md` row 33, `test_moe.py`)."""
    if recipe.arch == "mixtral":
        ours = fuse(ours)
    assert sorted(ours) == sorted(theirs), (
        f"names differ: missing {sorted(set(theirs) - set(ours))}, "
        f"extra {sorted(set(ours) - set(theirs))}"
    )
    shapes = {
        n: (ours[n].shape, theirs[n].shape) for n in theirs if ours[n].shape != theirs[n].shape
    }
    assert not shapes, f"shapes differ (alloy, mergekit): {shapes}"
    skip = recipe.arch == "mixtral" and recipe.data["merge_method"] not in ELEMENTWISE
    return max(rel_err(ours[n], theirs[n]) for n in theirs if not (skip and is_expert(n)))


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("standins")


def _both(text: str, tmp: Path) -> tuple[Any, Any]:
    """(mergekit's output or its exception, Alloy's output or its exception)."""
    results: list[Any] = []
    for tool, run in (("mergekit", run_mergekit), ("alloy", run_alloy)):
        try:
            results.append(load_state_dict(run(text, tmp / tool)))
        except Exception as e:  # the test inspects what each tool raised
            results.append(e)
    return results[0], results[1]


def test_corpus_size_and_sources() -> None:
    assert len(RECIPES) >= 40
    for r in RECIPES:
        assert r.source.startswith(("https://", "arcee-ai/mergekit ")), r.name


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe(recipe: Recipe, standins: Path, tmp_path: Path) -> None:
    import alloy.errors

    text = rewrite(recipe.text, standin_mapping(recipe, standins))
    theirs, ours = _both(text, tmp_path)
    pending = recipe.needs & PENDING
    if recipe.expect == "mergekit-refuses":  # a documented mergekit failure Alloy handles
        assert isinstance(theirs, Exception), "mergekit ran it"
        assert pending or isinstance(ours, dict), f"Alloy refuses it: {ours}"
    if pending:
        if recipe.expect != "mergekit-refuses":
            assert isinstance(theirs, dict), f"mergekit fails on {recipe.name}: {theirs!r}"
        assert isinstance(ours, alloy.errors.ConfigError), ours
        for need in pending:
            assert PENDING_REFUSAL[need] in str(ours)
        return
    if recipe.expect == "mergekit-refuses":
        return
    if recipe.expect == "both-refuse":
        assert isinstance(theirs, Exception), "mergekit ran it"
        assert isinstance(ours, alloy.errors.AlloyError), ours
        return
    if recipe.expect.startswith("refuse:"):
        reason = recipe.expect.removeprefix("refuse:").strip()
        assert isinstance(ours, alloy.errors.AlloyError), ours
        assert reason in str(ours)
        assert reason in COMPATIBILITY.read_text(), (
            f"docs/compatibility.md does not list {reason!r}"
        )
        return
    assert recipe.expect == "same", recipe.expect
    assert isinstance(theirs, dict), f"mergekit fails on the stand-ins: {theirs!r}"
    assert isinstance(ours, dict), f"Alloy refuses what mergekit runs: {ours}"
    if recipe.data["merge_method"] in RANDOM_METHODS:
        compare(ours, theirs, recipe)  # layout only: the draws differ
        theirs, ours = _both(with_density_one(text), tmp_path / "density1")
        assert isinstance(theirs, dict) and isinstance(ours, dict), (theirs, ours)
    err = compare(ours, theirs, recipe)
    assert err <= REL_TOL, f"largest relative difference {err:.3g}"
