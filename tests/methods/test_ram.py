"""ram and ramplus_tl (arXiv 2601.13572): unique changes kept, shared changes averaged."""

from __future__ import annotations

import pytest
import torch

from .helpers import assert_rel_close, merge, mergekit_merge, t

TVS = [t(1, 0, 2, 0), t(3, 0, 0, 0), t(0, 0, 4, 5)]


def run(name: str, tvs: list[torch.Tensor], base: torch.Tensor, **params: float) -> torch.Tensor:
    return merge(name, [base + tv for tv in tvs], base, params=params)


def test_ram_by_hand() -> None:
    # changed by 2, 0, 2 and 1 models: (1 + 3)/2, base, (2 + 4)/2, 5
    base = t(1, -1, 0.5, 2)
    torch.testing.assert_close(run("ram", TVS, base), base + t(2, 0, 3, 5))


def test_changes_below_epsilon_do_not_count() -> None:
    base = torch.zeros(2)
    tvs = [t(1e-6, 1.0), t(2.0, 1.0)]
    # entry 0: only model 2 changed it (1e-6 ≤ ε); entry 1: both, averaged
    torch.testing.assert_close(run("ram", tvs, base), t(2.0, 1.0))
    torch.testing.assert_close(run("ram", tvs, base, epsilon=1e-7), t((1e-6 + 2) / 2, 1.0))


@pytest.mark.parametrize(("r", "alpha", "boost"), [(0.1, 0.2, 1.02), (0.5, 1.0, 1.5)])
def test_ramplus_boosts_unique_changes_by_the_shared_share(
    r: float, alpha: float, boost: float
) -> None:
    # Model 3 changed entries 2 (shared) and 3 (unique): ρ = 1/1, λ = 1 + r·min(1, α).
    # Models 1 and 2 have no unique change, so their λ does not matter.
    base = torch.zeros(4)
    out = run("ramplus_tl", TVS, base, r=r, alpha=alpha)
    torch.testing.assert_close(out, t(2, 0, 3, 5 * boost))


def test_ramplus_without_shared_changes_is_ram() -> None:
    base = torch.zeros(3)
    tvs = [t(1, 0, 0), t(0, 2, 0), t(0, 0, 3)]
    torch.testing.assert_close(run("ramplus_tl", tvs, base), run("ram", tvs, base))


@pytest.mark.parity
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ram", {}),
        ("ram", {"epsilon": 0.3}),
        ("ramplus_tl", {"epsilon": 0.3}),
        ("ramplus_tl", {"r": 0.05, "alpha": 1.0, "epsilon": 0.5}),
    ],
)
def test_parity_with_mergekit(name: str, params: dict[str, float]) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(20, 10, generator=g)
    xs = [
        base + torch.randn(20, 10, generator=g) * (torch.rand(20, 10, generator=g) < 0.5)
        for _ in range(3)
    ]
    ours = merge(name, xs, base, params=params)
    assert_rel_close(ours, mergekit_merge(name, xs, base, params=params))
