"""The search-space syntax: ranges, choices, the method as a choice, and errors with lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alloy.errors import ConfigError
from alloy.search.seed import seed_values
from alloy.search.space import METHOD, Param, draw, parse_space

SPACE = """\
merge_method: {choice: [ties, task_arithmetic, tsv]}
base_model: /m/base
models:
  - model: /m/a
    parameters:
      weight: {search: [0.2, 1.0]}
      density: {search: [0.1, 0.9], step: 0.1}
  - model: /m/b
    parameters:
      weight: {choice: [0.5, 1.0]}
      density: 0.5
parameters:
  lambda: {search: [0.01, 2.0], log: true}
  alpha: {search: [0.5, 1.5]}
dtype: float32
"""


def test_ranges_choices_and_the_method_choice_are_named_by_location() -> None:
    space = parse_space(SPACE, "space.yml")
    by_name = {p.name: p for p in space.params}
    assert list(by_name) == [
        "merge_method",
        "models[0].parameters.weight",
        "models[0].parameters.density",
        "models[1].parameters.weight",
        "parameters.lambda",
        "parameters.alpha",
    ]
    assert space.methods == ("ties", "task_arithmetic", "tsv")
    assert by_name["models[0].parameters.weight"] == Param(
        "models[0].parameters.weight", ("models", 0, "parameters", "weight"), 6, 0.2, 1.0
    )
    assert by_name["models[0].parameters.density"].step == 0.1
    assert by_name["parameters.lambda"].log is True
    assert by_name["models[1].parameters.weight"].choices == (0.5, 1.0)
    assert by_name["merge_method"].line == 1


def test_a_trial_keeps_only_the_parameters_its_method_takes() -> None:
    space = parse_space(SPACE)
    values: dict[str, Any] = {
        METHOD: "tsv",
        "parameters.alpha": 0.7,
    }
    config = space.instantiate(values)
    # tsv takes alpha only: every weight, density and lambda is left out, fixed ones too
    assert config == {
        "merge_method": "tsv",
        "base_model": "/m/base",
        "models": [{"model": "/m/a", "parameters": {}}, {"model": "/m/b", "parameters": {}}],
        "parameters": {"alpha": 0.7},
        "dtype": "float32",
    }
    ties = space.instantiate(
        {
            METHOD: "ties",
            "models[0].parameters.weight": 0.3,
            "models[0].parameters.density": 0.4,
            "models[1].parameters.weight": 1.0,
            "parameters.lambda": 1.5,
        }
    )
    assert ties["models"][0]["parameters"] == {"weight": 0.3, "density": 0.4}
    assert ties["models"][1]["parameters"] == {"weight": 1.0, "density": 0.5}
    assert ties["parameters"] == {"lambda": 1.5}


def test_draw_asks_only_for_what_the_drawn_method_uses() -> None:
    space = parse_space(SPACE)
    asked: list[str] = []

    def suggest(p: Param) -> Any:
        asked.append(p.name)
        return "tsv" if p.name == METHOD else 1.0

    assert draw(space, suggest) == {METHOD: "tsv", "parameters.alpha": 1.0}
    assert asked == [METHOD, "parameters.alpha"]


def _issue(text: str) -> tuple[str, int | None, str]:
    with pytest.raises(ConfigError) as e:
        parse_space(text, "bad.yml")
    issue = e.value.issues[0]
    return issue.path, issue.line, issue.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("{search: [1.0, 0.1]}", "empty"),
        ("{search: [0.1]}", "two numbers"),
        ("{search: [0.0, 1.0], log: true}", "LOW > 0"),
        ("{search: [0.1, 1.0], steps: 0.1}", "unknown key 'steps'"),
        ("{search: [0.1, 1.0], choice: [1]}", "not both"),
        ("{choice: []}", "non-empty"),
    ],
)
def test_a_bad_range_names_its_key_and_line(value: str, words: str) -> None:
    text = SPACE.replace("weight: {choice: [0.5, 1.0]}", f"weight: {value}")
    path, line, message = _issue(text)
    assert (path, line) == ("models[1].parameters.weight", 10)
    assert words in message


def test_an_unknown_method_in_the_choice_names_merge_method() -> None:
    path, line, message = _issue(SPACE.replace("tsv]", "tiez]"))
    assert (path, line) == ("merge_method", 1)
    assert "tiez" in message


def test_a_parameter_no_method_takes_is_an_error_not_silently_dropped() -> None:
    path, line, message = _issue(SPACE.replace("  alpha:", "  alhpa:"))
    assert (path, line) == ("parameters.alhpa", 14)
    assert "alhpa" in message


def test_the_recommendation_maps_onto_the_space() -> None:
    space = parse_space(SPACE)
    rec = {
        "merge_method": "ties",
        "base_model": "/m/base",
        "models": [
            {"model": "/m/a", "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": "/m/b", "parameters": {"weight": 1.0, "density": 0.5}},
        ],
    }
    assert seed_values(space, rec) == {
        METHOD: "ties",
        "models[0].parameters.weight": 1.0,
        "models[0].parameters.density": 0.5,
        "models[1].parameters.weight": 1.0,
        "parameters.lambda": 1.0,  # ties' default, which the recommendation leaves implicit
    }
    assert seed_values(space, {**rec, "merge_method": "slerp"}) is None  # not in the choice
    assert seed_values(space, {**rec, "base_model": "/m/a"}) is None  # another base


def test_the_cli_reports_a_bad_space_with_its_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from alloy.cli import main

    bad = tmp_path / "space.yml"
    bad.write_text(SPACE.replace("[0.2, 1.0]", "[1.0, 0.2]"), encoding="utf-8")
    data = tmp_path / "a.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    r = CliRunner().invoke(main, ["search", str(bad), str(tmp_path / "out"), "--eval", str(data)])
    assert r.exit_code == 1
    assert "error:" in r.output and "models[0].parameters.weight" in r.output
    assert ":6" in r.output  # the line of the bad range
    assert not (tmp_path / "out").exists()
