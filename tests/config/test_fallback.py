"""slerp's fallback, one rule for the config check and the planner."""

from __future__ import annotations

from alloy.config.fallback import slerp_fallbacks
from alloy.config.load import parse_config
from alloy.plan.planner import choose_method


def test_only_slerp_over_more_than_two_falls_back() -> None:
    assert slerp_fallbacks("slerp", 2) is None
    assert slerp_fallbacks("slerp", 3) == ("ties", "multislerp")
    assert slerp_fallbacks("linear", 5) is None


def test_the_check_and_the_planner_agree() -> None:
    three = {"merge_method": "slerp", "models": ["a", "b", "c"], "parameters": {"density": 0.5}}
    # ties's `density` is accepted because slerp over three models runs ties or multislerp ...
    config = parse_config(three)
    notes: list[str] = []
    # ... and without a base model the planner picks multislerp, with a note
    assert choose_method(config, False, notes).name == "multislerp"
    assert len(notes) == 1 and "multislerp" in notes[0]
    with_base = parse_config({**three, "base_model": "a"})
    assert choose_method(with_base, False, []).name == "ties"
