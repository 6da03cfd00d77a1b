"""dare_ties and dare_linear (Yu et al. 2023): drop task-vector entries, rescale by 1/p."""

from __future__ import annotations

import math

import pytest
import torch

from alloy.kernels.random import draws32, keep_threshold
from alloy.methods.task_vectors import input_key

from .helpers import assert_rel_close, merge, mergekit_merge


def mp(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"weight": w, "density": d} for w, d in pairs]


def models(seed: int, n: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + torch.randn(shape, generator=g) for _ in range(n)]


def drop_masks(seed: int, n: int, shape: tuple[int, ...], p: float) -> list[torch.Tensor]:
    """The documented streams: model i keeps the entries whose draw (of its stream, at their
    flat index) is below p·2^32."""
    numel = math.prod(shape)
    return [
        (draws32(input_key(seed, i), 0, numel) < keep_threshold(p)).view(shape) for i in range(n)
    ]


def test_dare_linear_by_the_paper_formula() -> None:
    base, xs = models(0, 2, (6, 5))
    m1, m2 = drop_masks(11, 2, (6, 5), 0.4)
    # base + Σ w_i · m_i ⊙ δ_i / p
    expected = base + 0.6 * m1 * (xs[0] - base) / 0.4 + 0.9 * m2 * (xs[1] - base) / 0.4
    out = merge("dare_linear", xs, base, model_params=mp((0.6, 0.4), (0.9, 0.4)), seed=11)
    torch.testing.assert_close(out, expected)


def test_dare_ties_is_ties_on_the_dropped_task_vectors() -> None:
    base, xs = models(1, 3, (8, 8))
    masks = drop_masks(5, 3, (8, 8), 0.5)
    dropped = [base + m * (x - base) / 0.5 for m, x in zip(masks, xs)]
    weights = (0.5, 1.0, 0.7)
    out = merge("dare_ties", xs, base, model_params=mp(*((w, 0.5) for w in weights)), seed=5)
    expected = merge(
        "ties",
        dropped,
        base,
        params={"normalize": False},
        model_params=mp(*((w, 1.0) for w in weights)),
    )
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    ("dare", "reference", "params"),
    [
        ("dare_linear", "task_arithmetic", {}),
        ("dare_linear", "task_arithmetic", {"normalize": True, "lambda": 0.5}),
        ("dare_ties", "ties", {"normalize": False}),
        ("dare_ties", "ties", {"normalize": True}),
    ],
)
def test_density_one_reproduces_the_undropped_method(
    dare: str, reference: str, params: dict
) -> None:
    base, xs = models(2, 3, (5, 7))
    weights = mp((0.3, 1.0), (0.5, 1.0), (0.9, 1.0))
    out = merge(dare, xs, base, params=params, model_params=weights, seed=3)
    torch.testing.assert_close(out, merge(reference, xs, base, params=params, model_params=weights))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.8])
def test_kept_fraction_and_expected_delta(p: float) -> None:
    n = 1_000_000
    base = torch.zeros(n)
    delta = torch.randn(n, generator=torch.Generator().manual_seed(4))
    out = merge("dare_linear", [base + delta], base, model_params=mp((1.0, p)), seed=8)
    kept = out != 0
    # Fraction kept ~ p: binomial std √(p(1−p)/n) ≤ 5e-4
    assert abs(float(kept.float().mean()) - p) < 3e-3
    # Survivors are δ/p exactly
    torch.testing.assert_close(out[kept], delta[kept] / p)
    # E[out] = δ: the regression slope of out on δ is 1 (std √((1−p)/(p·n)) ≤ 3e-3)
    slope = float((out * delta).sum() / (delta * delta).sum())
    assert abs(slope - 1.0) < 0.02


def test_same_seed_same_output_and_different_seed_different_output() -> None:
    base, xs = models(5, 2, (32, 32))
    weights = mp((0.5, 0.3), (0.5, 0.6))
    for name in ("dare_linear", "dare_ties"):
        a = merge(name, xs, base, model_params=weights, seed=42)
        b = merge(name, xs, base, model_params=weights, seed=42)
        c = merge(name, xs, base, model_params=weights, seed=43)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_the_drop_pattern_does_not_depend_on_the_values() -> None:
    base = torch.zeros(1000)
    out1 = merge("dare_linear", [torch.full((1000,), 2.0)], base, model_params=mp((1, 0.5)), seed=1)
    out2 = merge(
        "dare_linear", [torch.full((1000,), -7.0)], base, model_params=mp((1, 0.5)), seed=1
    )
    assert torch.equal(out1 != 0, out2 != 0)


def test_rescale_false_keeps_the_survivors_unscaled() -> None:
    base, xs = models(6, 1, (400,))
    out = merge(
        "dare_linear", xs, base, params={"rescale": False}, model_params=mp((1, 0.25)), seed=2
    )
    delta = out - base
    kept = delta != 0
    torch.testing.assert_close(delta[kept], (xs[0] - base)[kept])


def test_density_zero_gives_the_base() -> None:
    base, xs = models(7, 2, (10,))
    out = merge("dare_ties", xs, base, model_params=mp((1, 0.0), (1, 0.0)), seed=0)
    torch.testing.assert_close(out, base)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["dare_ties", "dare_linear"])
@pytest.mark.parametrize("normalize", [True, False])
def test_density_one_parity_with_mergekit(name: str, normalize: bool) -> None:
    base, xs = models(9, 3, (16, 20))
    weights = mp((0.4, 1.0), (0.8, 1.0), (0.3, 1.0))
    params = {"normalize": normalize, "lambda": 1.3}
    ours = merge(name, xs, base, params=params, model_params=weights, seed=0)
    theirs = mergekit_merge(name, xs, base, params=params, model_params=weights)
    assert_rel_close(ours, theirs)


@pytest.mark.parity
def test_rescale_is_one_over_p_where_mergekit_matches_the_l1_norm() -> None:
    # Deliberate difference: survivors are divided by p (the paper); mergekit scales them by
    # ‖δ‖₁/‖kept‖₁, which is 1/p only on average. Both are unbiased at scale.
    n, p = 200_000, 0.3
    base = torch.zeros(n)
    x = torch.randn(n, generator=torch.Generator().manual_seed(10))
    ours = merge("dare_linear", [x], base, model_params=mp((1, p)), seed=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # mergekit draws from the global RNG
        theirs = mergekit_merge("dare_linear", [x], base, model_params=mp((1, p)))
    ours_scale = ours[ours != 0] / x[ours != 0]
    theirs_scale = theirs[theirs != 0] / x[theirs != 0]
    torch.testing.assert_close(ours_scale, torch.full_like(ours_scale, 1 / p))
    theirs_factor = float(theirs_scale.mean())
    assert theirs_factor != pytest.approx(1 / p, rel=1e-6)  # L1 matching, not 1/p ...
    assert theirs_factor == pytest.approx(1 / p, rel=0.02)  # ... though close at this size
    assert float(ours.abs().sum()) == pytest.approx(float(theirs.abs().sum()), rel=0.02)
