"""task_arithmetic (Ilharco et al. 2022) and ties (Yadav et al. 2023)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from alloy.errors import MergeComputationError

from .helpers import assert_rel_close, merge, mergekit_merge, t


def mp(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"weight": w, "density": d} for w, d in pairs]


# ---------------------------------------------------------------------------- task arithmetic

BASE = t(1, 1, 1)
X1, X2 = t(2, 0, 1), t(1, 3, -1)  # task vectors [1, −1, 0] and [0, 2, −2]
W = [{"weight": 0.5}, {"weight": 2.0}]  # Σ w_i δ_i = [0.5, −0.5, 0] + [0, 4, −4] = [0.5, 3.5, −4]


def test_task_arithmetic_by_hand() -> None:
    out = merge("task_arithmetic", [X1, X2], BASE, model_params=W)
    torch.testing.assert_close(out, t(1.5, 4.5, -3))


def test_task_arithmetic_normalize_divides_by_the_weight_sum() -> None:
    out = merge("task_arithmetic", [X1, X2], BASE, params={"normalize": True}, model_params=W)
    # [0.5, 3.5, −4] / 2.5 = [0.2, 1.4, −1.6]
    torch.testing.assert_close(out, t(1.2, 2.4, -0.6))


def test_task_arithmetic_lambda_scales_the_merged_task_vector() -> None:
    out = merge("task_arithmetic", [X1, X2], BASE, params={"lambda": 0.5}, model_params=W)
    torch.testing.assert_close(out, t(1.25, 2.75, -1.0))


def test_task_arithmetic_zero_weight_sum_is_not_divided() -> None:
    # |Σ w| < 1e-8: the divisor is 1 (mergekit's rule); 1·[1,−1,0] − 1·[0,2,−2] = [1,−3,2]
    out = merge(
        "task_arithmetic",
        [X1, X2],
        BASE,
        params={"normalize": True},
        model_params=[{"weight": 1.0}, {"weight": -1.0}],
    )
    torch.testing.assert_close(out, t(2, -2, 3))


def test_weights_summing_to_one_on_identical_inputs_reproduce_the_input() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 6, generator=g)
    x = base + torch.randn(5, 6, generator=g)
    for name in ("task_arithmetic", "ties"):
        out = merge(name, [x, x, x], base, model_params=mp((0.2, 1), (0.5, 1), (0.3, 1)))
        torch.testing.assert_close(out, x)


def test_needs_a_base() -> None:
    with pytest.raises(MergeComputationError, match="base"):
        merge("task_arithmetic", [X1], None, model_params=[{"weight": 1.0}])


def test_lambda_is_the_yaml_name_and_int8_mask_is_accepted() -> None:
    out = merge(
        "task_arithmetic",
        [X1, X2],
        BASE,
        params={"lambda": 0.5, "int8_mask": True},
        model_params=W,
    )
    torch.testing.assert_close(out, t(1.25, 2.75, -1.0))
    with pytest.raises(ValueError):
        merge("task_arithmetic", [X1], BASE, params={"lamda": 0.5}, model_params=W[:1])


# -------------------------------------------------------------------------------------- ties

TIES_BASE = t(1, -1, 0.5, 0, 2, 0, 1, 0)
D1 = t(3, -1, 2, 0.5, -4, 1, 5, 0)
D2 = t(-2, 2, 1, -0.1, -1, -3, 1.5, 0.25)
# density 0.5 on 8 entries keeps k = 4 per task vector:
#   trim(δ1) = [3, 0, 2, 0, −4, 0, 5, 0]       (|5|, |−4|, |3|, |2|)
#   trim(δ2) = [−2, 2, 0, 0, 0, −3, 1.5, 0]    (|−3|, |−2|, |2|, |1.5|)
# weights 1 and 2:  W1 = [3, 0, 2, 0, −4, 0, 5, 0],  W2 = [−4, 4, 0, 0, 0, −6, 3, 0]
#   ΣW = [−1, 4, 2, 0, −4, −6, 8, 0]  →  γ = [−, +, +, +, −, −, +, +]
#   agree1 = [0, 0, 1, 0, 1, 0, 1, 0],  agree2 = [1, 1, 0, 0, 0, 1, 1, 0]
#   Σ agree·W = [−4, 4, 2, 0, −4, −6, 8, 0];  Σ agree·w = [2, 2, 1, 0→1, 1, 2, 3, 0→1]
TIES_SUM = t(-4, 4, 2, 0, -4, -6, 8, 0)
TIES_MEAN = t(-2, 2, 2, 0, -4, -3, 8 / 3, 0)


def ties_inputs() -> list[torch.Tensor]:
    return [TIES_BASE + D1, TIES_BASE + D2]


def test_ties_by_hand() -> None:
    out = merge("ties", ties_inputs(), TIES_BASE, model_params=mp((1, 0.5), (2, 0.5)))
    torch.testing.assert_close(out, TIES_BASE + TIES_MEAN)


def test_ties_without_normalize_sums_the_agreeing_entries() -> None:
    out = merge(
        "ties",
        ties_inputs(),
        TIES_BASE,
        params={"normalize": False},
        model_params=mp((1, 0.5), (2, 0.5)),
    )
    torch.testing.assert_close(out, TIES_BASE + TIES_SUM)


def test_ties_lambda() -> None:
    out = merge(
        "ties",
        ties_inputs(),
        TIES_BASE,
        params={"lambda": 2.0},
        model_params=mp((1, 0.5), (2, 0.5)),
    )
    torch.testing.assert_close(out, TIES_BASE + 2 * TIES_MEAN)


def test_ties_equal_magnitudes_break_ties_by_lowest_index() -> None:
    base = torch.zeros(6)
    x = t(1, -1, 1, -1, 1, 1)  # all |δ| = 1; density 0.5 keeps k = 3: indices 0, 1, 2
    out = merge("ties", [x], base, params={"normalize": False}, model_params=mp((1, 0.5)))
    torch.testing.assert_close(out, t(1, -1, 1, 0, 0, 0))


def test_ties_rescale_matches_the_l1_norm() -> None:
    # trim([4, −3, 2, 1], 0.5) = [4, −3, 0, 0]; ‖δ‖₁ = 10, ‖kept‖₁ = 7
    out = merge(
        "ties",
        [t(4, -3, 2, 1)],
        torch.zeros(4),
        params={"rescale": True, "normalize": False},
        model_params=mp((1, 0.5)),
    )
    torch.testing.assert_close(out, t(40 / 7, -30 / 7, 0, 0))


def test_ties_keeps_one_entry_of_a_tiny_tensor() -> None:
    # int(0.1 · 3) = 0, but a positive density keeps at least one entry (mergekit 0.1.5)
    out = merge("ties", [t(1, -5, 2)], torch.zeros(3), model_params=mp((1, 0.1)))
    torch.testing.assert_close(out, t(0, -5, 0))


def test_ties_density_zero_gives_the_base() -> None:
    out = merge("ties", [t(1, -5, 2)], t(1, 1, 1), model_params=mp((1, 0.0)))
    torch.testing.assert_close(out, t(1, 1, 1))


def test_negative_density_raises() -> None:
    with pytest.raises(ValidationError, match="density"):  # the schema rejects it, at plan time
        merge("ties", [t(1, 2)], t(0, 0), model_params=mp((1, -0.5)))


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_density_one_single_model_equals_task_arithmetic(normalize: bool) -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(7, 9, generator=g)
    x = base + torch.randn(7, 9, generator=g)
    params = {"normalize": normalize}
    ties = merge("ties", [x], base, params=params, model_params=mp((0.7, 1.0)))
    ta = merge("task_arithmetic", [x], base, params=params, model_params=mp((0.7, 1.0)))
    torch.testing.assert_close(ties, ta)


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_density_one_with_agreeing_signs_equals_task_arithmetic(normalize: bool) -> None:
    # All task vectors positive: the election keeps every entry.
    g = torch.Generator().manual_seed(2)
    base = torch.randn(4, 8, generator=g)
    xs = [base + torch.rand(4, 8, generator=g) + 0.1 for _ in range(3)]
    models = mp((0.3, 1.0), (0.9, 1.0), (0.5, 1.0))
    params = {"normalize": normalize}
    ties = merge("ties", xs, base, params=params, model_params=models)
    ta = merge("task_arithmetic", xs, base, params=params, model_params=models)
    torch.testing.assert_close(ties, ta)


def test_ties_int8_mask_changes_nothing() -> None:
    a = merge("ties", ties_inputs(), TIES_BASE, model_params=mp((1, 0.5), (2, 0.5)))
    b = merge(
        "ties",
        ties_inputs(),
        TIES_BASE,
        params={"int8_mask": True},
        model_params=mp((1, 0.5), (2, 0.5)),
    )
    assert torch.equal(a, b)


def test_inputs_are_not_modified() -> None:
    xs = ties_inputs()
    copies = [x.clone() for x in xs]
    base = TIES_BASE.clone()
    merge("ties", xs, base, model_params=mp((1, 0.5), (2, 0.5)))
    assert all(torch.equal(x, c) for x, c in zip(xs, copies))
    assert torch.equal(base, TIES_BASE)


# ----------------------------------------------------------------------------------- parity


def random_models(seed: int, n: int = 3, shape: tuple[int, ...] = (24, 40)) -> tuple:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.1 * torch.randn(shape, generator=g) for _ in range(n)]


@pytest.mark.parity
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("lam", [1.0, 0.6])
def test_task_arithmetic_parity_with_mergekit(normalize: bool, lam: float) -> None:
    base, xs = random_models(3)
    models = mp((0.5, 1), (0.8, 1), (-0.3, 1))
    params = {"normalize": normalize, "lambda": lam}
    ours = merge("task_arithmetic", xs, base, params=params, model_params=models)
    theirs = mergekit_merge("task_arithmetic", xs, base, params=params, model_params=models)
    assert_rel_close(ours, theirs)


@pytest.mark.parity
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("densities", [(0.3, 0.7, 0.5), (1.0, 0.05, 0.9)])
def test_ties_parity_with_mergekit(
    normalize: bool, rescale: bool, densities: tuple[float, float, float]
) -> None:
    base, xs = random_models(4)  # continuous random values: no magnitude ties
    models = mp(*zip((0.5, 1.2, 0.7), densities))
    params = {"normalize": normalize, "rescale": rescale, "lambda": 0.9}
    ours = merge("ties", xs, base, params=params, model_params=models)
    theirs = mergekit_merge("ties", xs, base, params=params, model_params=models)
    assert_rel_close(ours, theirs)


@pytest.mark.parity
def test_ties_tiny_tensor_keeps_one_entry_like_mergekit() -> None:
    base, xs = random_models(5, n=2, shape=(5,))
    models = mp((1.0, 0.1), (1.0, 0.1))  # int(0.1 · 5) = 0
    ours = merge("ties", xs, base, model_params=models)
    theirs = mergekit_merge("ties", xs, base, model_params=models)
    assert_rel_close(ours, theirs)
