"""della and della_linear (Deep et al. 2024): magnitude-ranked random drop, rescaled by 1/p.

DELLA is random, so it is checked by the documented random stream (one ``rand(shape)`` per
model, in model order, for tensors under 8M elements), by its statistics, and by its
deterministic reductions (density 1, epsilon 0); against mergekit by keep rates.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoints import ModelSet
from pydantic import ValidationError

from alloy.kernels.random import uniform
from alloy.methods import get_method
from alloy.methods.sparsify import magprune
from alloy.methods.task_vectors import input_key

from .helpers import assert_rel_close, merge, mergekit_merge, t


def prune(delta: torch.Tensor, density: float, eps: float, seed: int, rescale: bool = True):
    return magprune(delta, density, eps, rescale=rescale, key=seed)


def stream(key: int, *shape: int) -> torch.Tensor:
    """The draws magprune compares keep probabilities with: the stream of ``key`` at the flat
    indices 0, 1, ... of a tensor of ``shape``."""
    n = 1
    for d in shape:
        n *= d
    return uniform(key, 0, n).view(*shape)


def mergekit_prune(delta: torch.Tensor, density: float, eps: float, seed: int) -> torch.Tensor:
    from mergekit.sparsify import RescaleNorm, della_magprune

    with torch.random.fork_rng():  # mergekit draws from the global RNG
        torch.manual_seed(seed)
        return della_magprune(delta, density, eps, rescale_norm=RescaleNorm.l1)


def test_keep_probabilities_follow_the_magnitude_rank_in_the_row() -> None:
    # |δ| = 1, 3, 2, 4: ranks 0, 2, 1, 3 of 4, r = rank/3; p = 0.5 − 0.3 + 0.6·r
    delta = t(1, -3, 2, -4)
    p = t(0.2, 0.6, 0.4, 0.8)
    u = stream(7, 4)
    torch.testing.assert_close(prune(delta, 0.5, 0.3, seed=7), delta * (u < p) / p)
    torch.testing.assert_close(prune(delta, 0.5, 0.3, seed=7, rescale=False), delta * (u < p))


def test_rows_are_ranked_separately() -> None:
    delta = torch.tensor([[1.0, 2.0, 3.0], [30.0, 20.0, 10.0]])
    p = torch.tensor([[0.3, 0.5, 0.7], [0.7, 0.5, 0.3]])  # density 0.5, epsilon 0.2
    u = stream(3, 2, 3)
    torch.testing.assert_close(prune(delta, 0.5, 0.2, seed=3), delta * (u < p) / p)


def test_equal_magnitudes_rank_by_position() -> None:
    delta = t(2, -2, 2)  # ranks 0, 1, 2
    p = t(0.4, 0.5, 0.6)
    u = stream(4, 3)
    torch.testing.assert_close(prune(delta, 0.5, 0.1, seed=4), delta * (u < p) / p)


def test_a_one_entry_row_keeps_with_probability_density() -> None:
    delta = torch.tensor([[1.0], [-2.0], [3.0]])
    u = stream(5, 3, 1)
    torch.testing.assert_close(prune(delta, 0.4, 0.2, seed=5), delta * (u < 0.4) / 0.4)


@pytest.mark.parity
def test_mergekit_fails_on_one_entry_rows() -> None:
    """The rank range of a one-entry row is 0, mergekit divides 0 by 0 and its Bernoulli
    rejects the NaN probability (a [n, 1] tensor cannot be merged with della there)."""
    with pytest.raises(RuntimeError, match="p_in"):
        mergekit_prune(torch.tensor([[1.0], [-2.0], [3.0]]), 0.4, 0.2, seed=0)


def test_unbiased_where_mergekit_l1_rescale_is_not() -> None:
    """E[magprune(δ)] = δ per entry (the paper's 1/p). mergekit matches the L1 norm of the
    whole tensor instead, so large entries (kept more often) are inflated, small ones shrunk."""
    delta = torch.linspace(0.1, 6.4, 64) * torch.tensor([1.0, -1.0]).repeat(32)
    # Rows are pruned independently: 3000 copies of the row are 3000 draws in one call.
    ours = prune(delta.repeat(3000, 1), 0.5, 0.3, seed=0).mean(dim=0)
    draws = 300
    theirs = sum(mergekit_prune(delta, 0.5, 0.3, seed=s) for s in range(draws)) / draws
    top, bottom = slice(48, 64), slice(0, 16)
    ratio = ours / delta
    assert float(ratio[top].mean()) == pytest.approx(1.0, abs=0.03)
    assert float(ratio[bottom].mean()) == pytest.approx(1.0, abs=0.06)
    their_ratio = theirs / delta
    # mergekit: E ≈ p_j / (Σ p_k |δ_k| / Σ |δ_k|) = p_j / 0.603: ≈ 1.21 (top), ≈ 0.45 (bottom)
    assert float(their_ratio[top].mean()) > 1.15
    assert float(their_ratio[bottom].mean()) < 0.6


@pytest.mark.parity
def test_keep_rates_by_rank_match_the_formula_and_mergekit() -> None:
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(128, 256, generator=g)
    density, eps = 0.4, 0.2
    ranks = delta.abs().argsort(dim=-1).argsort(dim=-1)  # 0 = smallest in its row
    bucket = ranks * 4 // 256  # rank quartile
    kept_ours = prune(delta, density, eps, seed=1, rescale=False) != 0
    kept_theirs = mergekit_prune(delta, density, eps, seed=1) != 0
    for q in range(4):
        where = bucket == q
        expected = density - eps + 2 * eps * (q + 0.5) / 4  # mean p over the quartile
        ours, theirs = (
            float(kept_ours[where].float().mean()),
            float(kept_theirs[where].float().mean()),
        )
        assert ours == pytest.approx(expected, abs=0.025), q
        assert theirs == pytest.approx(expected, abs=0.025), q


def test_three_dimensional_tensors_rank_along_the_last_dimension() -> None:
    """Each row of a [experts, out, in] tensor is ranked on its own; mergekit ranks along
    dimension 1, across rows, so a row of small values is almost always dropped."""
    small = torch.linspace(0.001, 0.05, 50)
    # 400 experts with the same two rows: [400, 2, 50]
    delta = torch.stack([small, small * 1000]).expand(400, 2, 50).contiguous()
    ours = (prune(delta, 0.5, 0.3, seed=0, rescale=False) != 0).float()
    theirs = (mergekit_prune(delta, 0.5, 0.3, seed=0) != 0).float()
    ours_rate, theirs_rate = ours.mean(dim=(0, 2)), theirs.mean(dim=(0, 2))
    torch.testing.assert_close(ours_rate, t(0.5, 0.5), rtol=0, atol=0.03)
    torch.testing.assert_close(theirs_rate, t(0.2, 0.8), rtol=0, atol=0.03)


def test_epsilon_zero_is_dare() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(6, 7, generator=g)
    xs = [base + torch.randn(6, 7, generator=g) for _ in range(2)]
    mps = [{"weight": 0.6, "density": 0.3}, {"weight": 1.1, "density": 0.7}]
    out = merge("della_linear", xs, base, model_params=[{**m, "epsilon": 0} for m in mps], seed=9)
    torch.testing.assert_close(out, merge("dare_linear", xs, base, model_params=mps, seed=9))


@pytest.mark.parametrize(
    ("della", "reference", "params"),
    [("della", "ties", {}), ("della_linear", "task_arithmetic", {"lambda": 0.5})],
)
def test_density_one_is_deterministic(della: str, reference: str, params: dict) -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(9, 5, generator=g)
    xs = [base + torch.randn(9, 5, generator=g) for _ in range(3)]
    mps = [{"weight": w} for w in (0.3, 1.0, 0.6)]
    out = merge(della, xs, base, params=params, model_params=mps, seed=1)
    torch.testing.assert_close(out, merge(reference, xs, base, params=params, model_params=mps))
    assert_rel_close(out, mergekit_merge(della, xs, base, params=params, model_params=mps))


def test_della_elects_signs_on_the_pruned_vectors() -> None:
    g = torch.Generator().manual_seed(4)
    base = torch.randn(5, 6, generator=g)
    xs = [base + torch.randn(5, 6, generator=g) for _ in range(2)]
    pruned = [
        base + magprune(x - base, 0.5, 0.2, rescale=True, key=input_key(8, i))
        for i, x in enumerate(xs)
    ]
    mps = [
        {"weight": 0.8, "density": 0.5, "epsilon": 0.2},
        {"weight": 0.4, "density": 0.5, "epsilon": 0.2},
    ]
    out = merge("della", xs, base, model_params=mps, seed=8)
    expected = merge("ties", pruned, base, model_params=[{"weight": 0.8}, {"weight": 0.4}])
    torch.testing.assert_close(out, expected)


@pytest.mark.parity
@pytest.mark.parametrize(("density", "eps"), [(0.5, 0.5), (0.2, 0.3), (0.9, 0.15), (0.5, -0.1)])
def test_epsilon_outside_the_unit_interval_is_rejected(density: float, eps: float) -> None:
    schema = get_method("della").model_params
    with pytest.raises(ValueError, match="epsilon"):
        schema.model_validate({"weight": 1.0, "density": density, "epsilon": eps})
    with pytest.raises(ValidationError, match="epsilon"):  # before anything is pruned
        merge(
            "della",
            [t(1, 2, 3)],
            t(0, 0, 0),
            model_params=[{"weight": 1.0, "density": density, "epsilon": eps}],
        )
    if eps >= 0:  # mergekit rejects the same (it accepts a negative epsilon)
        with pytest.raises(ValueError, match="psilon"):
            mergekit_prune(t(1, 2, 3), density, eps, seed=0)


def test_epsilon_is_free_when_nothing_is_dropped_at_random() -> None:
    schema = get_method("della").model_params
    # density 1 keeps everything and 0 nothing: no keep probability, so any epsilon is valid
    assert schema.model_validate({"weight": 1.0, "density": 1.0, "epsilon": 0.9}).epsilon == 0.9
    assert schema.model_validate({"weight": 1.0, "density": 0.0, "epsilon": 0.9}).epsilon == 0.9


def test_a_bad_epsilon_is_a_config_error_before_anything_is_read(
    llama_models: ModelSet, tmp_path: Path
) -> None:
    import alloy
    from alloy.errors import ConfigError

    config = {
        "merge_method": "della",
        "base_model": str(llama_models.base),
        "models": [
            {"model": str(llama_models.ft1), "parameters": {"weight": 1.0, "density": 0.4}},
            {
                "model": str(llama_models.ft2),
                "parameters": {"weight": 1.0, "density": 0.4, "epsilon": 0.5},
            },
        ],
    }
    with pytest.raises(ConfigError, match=r"models\[1\].*epsilon.*< 0.4"):
        alloy.merge(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_magprune_in_place_equals_out_of_place() -> None:
    g = torch.Generator().manual_seed(11)
    delta = torch.randn(33, 17, generator=g)
    want = magprune(delta, 0.4, 0.1, rescale=True, key=5)
    work = delta.clone()
    got = magprune(work, 0.4, 0.1, rescale=True, key=5, out=work)
    assert got.data_ptr() == work.data_ptr()
    assert torch.equal(work, want) and not torch.equal(work, delta)
