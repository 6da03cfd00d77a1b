"""Parameter evaluation, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from alloy.config.params import evaluate_setting, layer_position, resolve
from alloy.config.schema import Conditional


def test_scalar_is_itself() -> None:
    assert evaluate_setting("x", 0.25, 0.7) == 0.25


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0.0, 0.0),
        (1.0, 1.0),
        # anchors [0, 0.5, 0.3, 0.7, 1] at t=0, .25, .5, .75, 1
        (0.25, 0.5),
        (0.5, 0.3),
        # halfway between anchors 0.5 (t=.25) and 0.3 (t=.5): 0.4
        (0.375, 0.4),
        # 0.9 -> scaled 3.6: 0.4*0.7 + 0.6*1.0 = 0.88
        (0.9, 0.88),
    ],
)
def test_gradient_is_piecewise_linear(t: float, expected: float) -> None:
    value = evaluate_setting("x", (0, 0.5, 0.3, 0.7, 1), t)
    assert value == pytest.approx(expected)


def test_step_list_of_non_numbers() -> None:
    assert evaluate_setting("x", ("a", "b", "c"), 0.0) == "a"
    assert evaluate_setting("x", ("a", "b", "c"), 0.6) == "b"  # int(0.6 * 2) = 1
    assert evaluate_setting("x", ("a", "b", "c"), 1.0) == "c"


def test_first_matching_filter_wins_and_substring_match() -> None:
    setting = (Conditional(0.1, "self_attn"), Conditional(0.2, "mlp"), Conditional(0.9))
    assert evaluate_setting("model.layers.3.self_attn.q_proj.weight", setting, 0) == 0.1
    assert evaluate_setting("model.layers.3.mlp.up_proj.weight", setting, 0) == 0.2
    assert evaluate_setting("model.norm.weight", setting, 0) == 0.9
    assert evaluate_setting("x", (Conditional(0.5, "*"),), 0) == 0.5


def test_filtered_gradient() -> None:
    setting = (Conditional((0.0, 1.0), "mlp"),)
    assert evaluate_setting("a.mlp.b", setting, 0.25) == pytest.approx(0.25)
    assert evaluate_setting("a.attn.b", setting, 0.25) is None


def test_precedence_falls_through_unmatched_filters() -> None:
    levels = [
        {"weight": (Conditional(3.0, "mlp"),)},  # per model: only mlp
        {},  # slice
        {"weight": 1.0},  # top level
    ]
    assert resolve("weight", levels, "layers.0.mlp.w", 0) == (3.0, 0)
    assert resolve("weight", levels, "layers.0.attn.w", 0) == (1.0, 2)
    assert resolve("density", levels, "x", 0) == (None, None)


def test_layer_position() -> None:
    assert [layer_position(i, 5) for i in range(5)] == [0, 0.25, 0.5, 0.75, 1]
    assert layer_position(0, 1) == 1.0  # a one-layer slice sits at t = 1, as in mergekit
