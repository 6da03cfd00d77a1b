"""Published recipes with keys mergekit ignores: merged as mergekit merges them, with a warning.

Each recipe holds one pattern found in published mergekit configs (issue 14): a misspelled key,
a misplaced one, a parameter the method does not use, a key given twice. mergekit 0.1.5 ignores
the key, and the published model was made that way. Each test checks, on the tiny checkpoints:

- by default, Alloy's merge equals mergekit's merge of the same YAML (fp32, the harness of
  `tests/test_parity_mergekit.py`);
- the key is reported once, with the file, its line and the closest valid key, in the merge's
  notes and under the report's Warnings;
- with ``strict`` the key is an error naming it and its line, and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from checkpoints import ModelSet, load_state_dict, make_model
from test_parity_mergekit import assert_fp32_parity, run_mergekit

import alloy
from alloy.errors import ConfigError

pytestmark = pytest.mark.parity


@dataclass(frozen=True)
class Recipe:
    text: str  # YAML, with {base}, {ft1}, {ft2} for the checkpoints
    key: str  # the location of the ignored key
    marker: str  # the text of the line the key is on (first occurrence)
    near: str | None  # the closest valid key the warning names (None: "no valid key is close")


TIES = """\
merge_method: ties
base_model: {base}
models:
  - model: {ft1}
    parameters: {{weight: 0.6, density: 0.7}}
  - model: {ft2}
    parameters: {{weight: 0.4, density: 0.5}}
"""

RECIPES: dict[str, Recipe] = {
    "misspelled_tokenizer_source": Recipe(
        TIES + "tokenzer_source: base\n", "tokenzer_source", "tokenzer_source:", "tokenizer_source"
    ),
    "misspelled_normalize": Recipe(
        TIES + "parameters:\n  nomalize: false\n", "parameters.nomalize", "nomalize:", "normalize"
    ),
    "tensor_name_in_a_source": Recipe(
        """\
merge_method: linear
slices:
  - sources:
      - model: {ft1}
        layer_range: [0, 4]
        parameters: {{weight: 0.3}}
        model.norm.weight: 0.9
      - model: {ft2}
        layer_range: [0, 4]
        parameters: {{weight: 0.7}}
""",
        "slices[0].sources[0].model.norm.weight",
        "model.norm.weight:",
        None,
    ),
    "int8_mask_at_top_level": Recipe(
        TIES + "int8_mask: true\n", "int8_mask", "int8_mask:", "parameters.int8_mask"
    ),
    "select_topk_at_top_level": Recipe(
        """\
merge_method: sce
base_model: {base}
models:
  - model: {far1}
  - model: {far2}
select_topk: 0.5
""",
        "select_topk",
        "select_topk:",
        "parameters.select_topk",
    ),
    "pad_to_multiple_of_at_top_level": Recipe(
        TIES + "pad_to_multiple_of: 64\n",
        "pad_to_multiple_of",
        "pad_to_multiple_of:",
        "tokenizer.pad_to_multiple_of",
    ),
    "weight_under_sce": Recipe(
        """\
merge_method: sce
base_model: {base}
models:
  - model: {far1}
    parameters:
      weight: 0.8
  - model: {far2}
parameters: {{select_topk: 0.7}}
""",
        "models[0].parameters.weight",
        "weight:",
        None,
    ),
    "weight_under_model_stock": Recipe(
        """\
merge_method: model_stock
base_model: {base}
models:
  - model: {ft1}
    parameters: {{weight: 0.5}}
  - model: {agree}
""",
        "models[0].parameters.weight",
        "weight:",
        None,
    ),
    "normalize_under_sce": Recipe(
        """\
merge_method: sce
base_model: {base}
models:
  - model: {far1}
  - model: {far2}
parameters:
  normalize: true
""",
        "parameters.normalize",
        "normalize:",
        None,
    ),
    "normalize_under_multislerp": Recipe(
        """\
merge_method: multislerp
models:
  - model: {ft1}
    parameters: {{weight: 1.0}}
  - model: {ft2}
    parameters: {{weight: 3.0}}
parameters:
  normalize: false
""",
        "parameters.normalize",
        "normalize:",
        "normalize_weights",
    ),
    "embed_slerp_under_slerp": Recipe(
        """\
merge_method: slerp
base_model: {ft1}
models:
  - model: {ft1}
  - model: {ft2}
parameters:
  t: 0.3
  embed_slerp: true
""",
        "parameters.embed_slerp",
        "embed_slerp:",
        None,
    ),
    "key_given_twice": Recipe(
        """\
merge_method: slerp
base_model: {ft1}
models:
  - model: {ft1}
  - model: {ft2}
parameters:
  t: 0.2
  t: 0.8
""",
        "parameters.t",
        "t: 0.2",
        None,
    ),
}


@pytest.fixture(scope="module")
def checkpoints(llama_models: ModelSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny llama set, plus a fine-tune of ft1 (its task vector agrees with ft1's, for
    model_stock) and two fine-tunes far from the base (for sce, whose weights mergekit makes
    uniform when the task vectors are small)."""
    root = tmp_path_factory.mktemp("compat")
    base = llama_models.base
    return {
        "base": str(base),
        "ft1": str(llama_models.ft1),
        "ft2": str(llama_models.ft2),
        "agree": str(make_model("llama", root / "agree", seed=3, base=llama_models.ft1)),
        "far1": str(make_model("llama", root / "far1", seed=11, base=base, delta_scale=0.3)),
        "far2": str(make_model("llama", root / "far2", seed=12, base=base, delta_scale=0.5)),
    }


def _write(recipe: Recipe, checkpoints: dict[str, str], tmp_path: Path) -> tuple[Path, int]:
    """The recipe as a YAML file, and the line its ignored key is on (from the text)."""
    text = recipe.text.format(**checkpoints)
    path = tmp_path / "recipe.yml"
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if recipe.marker in ln)
    return path, line


@pytest.mark.parametrize("name", list(RECIPES))
def test_ignored_key_merges_as_mergekit_with_a_warning(
    name: str, checkpoints: dict[str, str], tmp_path: Path
) -> None:
    recipe = RECIPES[name]
    path, line = _write(recipe, checkpoints, tmp_path)
    result = alloy.merge(path, tmp_path / "alloy", random_seed=0, copy_tokenizer=False)
    theirs = run_mergekit(yaml.safe_load(path.read_text()), tmp_path / "mergekit")
    assert_fp32_parity(load_state_dict(result.out_dir), load_state_dict(theirs))

    start = f"{path}:{line}: `{recipe.key}` is ignored, as mergekit ignores it"
    mine = [n for n in result.notes if n.startswith(start)]
    assert len(mine) == 1, result.notes
    assert sum(f"`{recipe.key}`" in n for n in result.notes) == 1  # reported once
    if recipe.near is not None:
        assert f"closest valid key: `{recipe.near}`" in mine[0]
    elif name == "key_given_twice":
        assert f"the value at line {line + 1} is used" in mine[0]
    else:
        assert "no valid key is close" in mine[0]
    assert result.report is not None and mine[0] in result.report["warnings"]
    report_md = (result.out_dir / "report.md").read_text()
    assert "Warnings" in report_md and f"`{recipe.key}` is ignored" in report_md


@pytest.mark.parametrize("name", list(RECIPES))
def test_ignored_key_is_an_error_under_strict(
    name: str, checkpoints: dict[str, str], tmp_path: Path
) -> None:
    recipe = RECIPES[name]
    path, line = _write(recipe, checkpoints, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        alloy.merge(path, out, strict=True, copy_tokenizer=False)
    # a key given twice is refused at the later key (the one YAML keeps)
    at = line + 1 if name == "key_given_twice" else line
    issues = [i for i in e.value.issues if i.path == recipe.key and i.line == at]
    assert len(issues) == 1, str(e.value)
    assert not out.exists()


def test_strict_also_refuses_a_config_parsed_without_it(
    checkpoints: dict[str, str], tmp_path: Path
) -> None:
    path, line = _write(RECIPES["int8_mask_at_top_level"], checkpoints, tmp_path)
    config = alloy.load_config(path)
    assert [(k.path, k.line) for k in config.ignored] == [("int8_mask", line)]
    with pytest.raises(ConfigError, match=r"--strict refuses it") as e:
        alloy.plan(config, strict=True)
    assert e.value.issues[0].path == "int8_mask" and e.value.issues[0].line == line


def test_cli_plan_prints_the_warning_and_strict_refuses(
    checkpoints: dict[str, str], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from alloy.cli import main

    path, line = _write(RECIPES["misspelled_tokenizer_source"], checkpoints, tmp_path)
    r = CliRunner().invoke(main, ["plan", str(path)])
    assert r.exit_code == 0, r.output
    assert f"{path}:{line}: `tokenzer_source` is ignored, as mergekit ignores it" in r.output
    strict = CliRunner().invoke(main, ["plan", str(path), "--strict"])
    assert strict.exit_code == 1
    assert f"{path}:{line}: tokenzer_source:" in strict.output
    assert "did you mean 'tokenizer_source'?" in strict.output
