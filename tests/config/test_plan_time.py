"""Problems found after parsing (by the planner, on real headers) still name the file, the
line and the model; a key Alloy cannot honour is refused, not dropped."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny import write_tiny

from alloy.api import plan
from alloy.cli import main
from alloy.config.load import load_config
from alloy.config.schema import ModelRef
from alloy.errors import ConfigError, ConfigIssue


def _write(tmp_path: Path, body: str) -> Path:
    write_tiny(tmp_path / "base", 0)
    write_tiny(tmp_path / "a", 1)
    write_tiny(tmp_path / "b", 2)
    p = tmp_path / "cfg.yml"
    p.write_text(textwrap.dedent(body).format(root=tmp_path))
    return p


def test_a_parameter_the_method_cannot_take_names_its_model_and_line(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path,
        """\
        merge_method: ties
        base_model: {root}/base
        models:
          - model: {root}/a
            parameters: {{weight: 1.0, density: 0.5}}
          - model: {root}/b
            parameters: {{weight: heavy, density: 0.5}}
        """,
    )
    with pytest.raises(ConfigError) as e:
        plan(cfg)
    weight = [i for i in e.value.issues if "weight" in i.message]
    # line 6 is `- model: .../b`, the entry whose parameters hold the bad weight
    assert [(i.path, i.line) for i in weight] == [("models[1]", 6)]
    r = CliRunner().invoke(main, ["plan", str(cfg)])
    assert r.exit_code == 1 and f"{cfg}:6: models[1]: parameter 'weight'" in r.output


def test_an_issue_takes_the_line_of_its_nearest_enclosing_location() -> None:
    lines = {"slices[0]": 3, "slices[0].sources[1]": 7, "parameters": 12}
    found = ConfigError(
        [
            ConfigIssue("bad", "slices[0].sources[1].parameters"),
            ConfigIssue("bad", "slices[0].base_model"),
            ConfigIssue("bad", "parameters"),
            ConfigIssue("bad", "merge_method"),
            ConfigIssue("bad", "parameters", line=2),  # a line already known is kept
        ],
        "cfg.yml",
        lines,
    )
    assert [i.line for i in found.issues] == [7, 3, 12, None, 2]


def test_override_architecture_is_refused_not_dropped(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yml"
    p.write_text(
        "merge_method: linear\n"
        "models:\n"
        "  - model: {model: {path: a}, override_architecture: MistralForCausalLM}\n"
        "  - model: b\n"
    )
    with pytest.raises(ConfigError, match="override_architecture` is not supported") as e:
        load_config(p)
    assert [(i.path, i.line) for i in e.value.issues] == [("models[0].model", 3)]


def test_an_unknown_key_of_a_model_mapping_is_an_error_under_strict(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yml"
    p.write_text("merge_method: linear\nmodels:\n  - model: {model: {path: a}, lroa: x}\n")
    with pytest.raises(ConfigError, match="'lroa' is not a key of a model mapping") as e:
        load_config(p, strict=True)
    assert "did you mean 'lora'?" in str(e.value)


def test_an_unknown_key_of_a_model_mapping_is_ignored_as_mergekit_does(tmp_path: Path) -> None:
    # mergekit's ModelReference drops unknown keys: the adapter misspelled here is not applied
    p = tmp_path / "cfg.yml"
    p.write_text(
        "merge_method: linear\nmodels:\n  - model: {model: {path: a}, lroa: x}\n"
        "    parameters: {weight: 1}\n"
    )
    cfg = load_config(p)
    assert cfg.models is not None and cfg.models[0].model == ModelRef("a")
    assert [(k.path, k.line, k.near) for k in cfg.ignored] == [("models[0].model.lroa", 3, "lora")]


def test_a_config_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yml"
    p.write_bytes(b"merge_method: linear\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"cfg.yml:2: not UTF-8 text") as e:
        load_config(p)
    assert isinstance(e.value.__cause__, UnicodeDecodeError)


def test_an_unknown_key_of_a_model_path_mapping_is_ignored_with_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yml"
    p.write_text(
        "merge_method: linear\nmodels:\n  - model:\n      model: {path: a, revison: v2}\n"
        "    parameters: {weight: 1}\n"
    )
    cfg = load_config(p)
    assert cfg.models is not None and cfg.models[0].model == ModelRef("a")
    assert [(k.path, k.line, k.near) for k in cfg.ignored] == [
        ("models[0].model.model.revison", 4, "revision")
    ]
