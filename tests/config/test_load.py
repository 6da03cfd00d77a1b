"""Config validation: every key of mergekit's schema, strict errors with lines and hints."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from alloy.config.load import load_config, parse_config
from alloy.config.schema import Conditional, ModelRef
from alloy.errors import ConfigError


def _load(tmp_path: Path, text: str, strict: bool = False):
    p = tmp_path / "config.yml"
    p.write_text(textwrap.dedent(text))
    return load_config(p, strict=strict)


def _errors(tmp_path: Path, text: str, strict: bool = False) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text, strict)
    return e.value


def test_full_schema_parses(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        """
        merge_method: ties
        base_model: org/base@v2
        models:
          - model: a
            parameters: {weight: 0.6, density: [0.2, 0.8]}
          - model: b
            parameters:
              weight:
                - filter: self_attn
                  value: 0.3
                - value: 0.7
        parameters: {normalize: true, lambda: 0.9}
        dtype: bf16
        out_dtype: torch.float16
        tokenizer_source: base
        chat_template: chatml
        name: my-merge
        """,
    )
    assert cfg.merge_method == "ties"
    assert cfg.base_model == ModelRef("org/base", "v2")
    assert cfg.models is not None and len(cfg.models) == 2
    assert cfg.models[0].parameters == {"weight": 0.6, "density": (0.2, 0.8)}
    assert cfg.models[1].parameters["weight"] == (
        Conditional(0.3, "self_attn"),
        Conditional(0.7, None),
    )
    assert cfg.parameters == {"normalize": True, "lambda": 0.9}
    assert (cfg.dtype, cfg.out_dtype) == ("bfloat16", "float16")
    assert cfg.tokenizer_source == "base"
    assert cfg.name == "my-merge"
    assert cfg.all_models() == [ModelRef("org/base", "v2"), ModelRef("a"), ModelRef("b")]


def test_slices_schema(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        """
        merge_method: slerp
        slices:
          - sources:
              - {model: a, layer_range: [0, 4]}
              - {model: b, layer_range: [2, 6]}
            base_model: a
            parameters: {t: [0, 1]}
        """,
    )
    assert cfg.slices is not None
    sl = cfg.slices[0]
    assert [s.layer_range for s in sl.sources] == [(0, 4), (2, 6)]
    assert sl.base_model == ModelRef("a")
    assert sl.parameters == {"t": (0, 1)}


UNKNOWN_KEYS = """
    merge_method: linear
    modles:
      - model: a
    models:
      - model: a
        paramters: {weight: 1}
      - model: b
        parameters: {wieght: 1}
    """


def test_unknown_keys_named_with_line_and_closest_key(tmp_path: Path) -> None:
    err = _errors(tmp_path, UNKNOWN_KEYS, strict=True)
    text = str(err)
    # all three problems are reported at once, each with its line
    assert len(err.issues) == 3
    by_key = {i.path: i for i in err.issues}
    assert by_key["modles"].line == 3 and "did you mean 'models'" in by_key["modles"].message
    assert by_key["models[0].paramters"].line == 7
    assert "did you mean 'parameters'" in by_key["models[0].paramters"].message
    assert by_key["models[1].parameters.wieght"].line == 9
    assert "did you mean 'weight'" in by_key["models[1].parameters.wieght"].message
    assert all("--strict refuses it" in i.message for i in err.issues)
    assert "config.yml:3:" in text


def test_ignored_keys_that_explain_a_missing_parameter_are_named_with_it(tmp_path: Path) -> None:
    # by default the unknown keys are ignored, as mergekit ignores them; but then linear has no
    # weight for either model, and each error names the key that would have set it
    err = _errors(tmp_path, UNKNOWN_KEYS)
    by_key = {i.path: i for i in err.issues}
    assert set(by_key) == {"models[0].paramters", "models[1].parameters.wieght"}
    first = by_key["models[0].paramters"]
    assert first.line == 7 and "'weight', which is set nowhere for models[0]" in first.message
    assert "`models[0].paramters` (line 7), did you mean 'parameters'?" in first.message
    second = by_key["models[1].parameters.wieght"]
    assert second.line == 9 and "did you mean 'weight'?" in second.message


def test_unknown_top_level_key_is_ignored_with_a_warning(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        "merge_method: linear\nmodles: []\nmodels: [{model: a, parameters: {weight: 1}}]\n",
    )
    assert [(k.path, k.line, k.near) for k in cfg.ignored] == [("modles", 2, "models")]
    note = cfg.ignored[0].render("c.yml")
    assert note.startswith("c.yml:2: `modles` is ignored, as mergekit ignores it")
    assert "closest valid key: `models`" in note


GLOBAL_PER_MODEL = """
    merge_method: slerp
    base_model: a
    models:
      - model: a
      - model: b
        parameters: {t: 0.5}
    parameters: {t: 0.3}
    """


def test_global_parameter_set_per_model_is_an_error(tmp_path: Path) -> None:
    # mergekit silently ignores a per-model `t` for slerp; --strict refuses it
    err = _errors(tmp_path, GLOBAL_PER_MODEL, strict=True)
    assert "slice `parameters`" in err.issues[0].message
    assert err.issues[0].line == 7


def test_global_parameter_set_per_model_is_ignored_by_default(tmp_path: Path) -> None:
    cfg = _load(tmp_path, GLOBAL_PER_MODEL)
    assert cfg.models is not None and cfg.models[1].parameters == {}
    assert cfg.parameters == {"t": 0.3}
    assert [(k.path, k.line, k.near) for k in cfg.ignored] == [
        ("models[1].parameters.t", 7, "parameters.t")
    ]


def test_layer_range_half_open_and_equal_lengths(tmp_path: Path) -> None:
    err = _errors(
        tmp_path,
        """
        merge_method: passthrough
        slices:
          - sources: [{model: a, layer_range: [3, 3]}]
          - sources:
              - {model: a, layer_range: [0, 2]}
              - {model: b, layer_range: [0, 3]}
          - sources: [{model: a}]
        """,
    )
    msgs = [i.message for i in err.issues]
    assert any("half-open" in m and "[3, 4]" in m for m in msgs)
    assert any("same number of layers" in m for m in msgs)
    assert any("needs `layer_range" in m for m in msgs)


def test_method_needing_base_without_one(tmp_path: Path) -> None:
    err = _errors(tmp_path, "merge_method: ties\nmodels: [{model: a, parameters: {weight: 1}}]\n")
    assert "needs a base model" in err.issues[0].message


def test_unknown_method_suggests(tmp_path: Path) -> None:
    err = _errors(tmp_path, "merge_method: tie\nmodels: [{model: a}]\n")
    assert "did you mean 'ties'" in str(err).lower()


def test_models_and_slices_exclusive_and_bad_dtype(tmp_path: Path) -> None:
    err = _errors(
        tmp_path,
        """
        merge_method: linear
        dtype: float8
        models: [{model: a, parameters: {weight: 1}}]
        slices: [{sources: [{model: a, layer_range: [0, 1]}]}]
        """,
    )
    msgs = " | ".join(i.message for i in err.issues)
    assert "exactly one of" in msgs and "unknown dtype 'float8'" in msgs


DUPLICATE = """
    merge_method: slerp
    models: [{model: a, parameters: {weight: 1}}]
    merge_method: linear
    """


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    err = _errors(tmp_path, DUPLICATE, strict=True)
    assert any("appears twice" in i.message and i.line == 4 for i in err.issues)


def test_duplicate_yaml_key_keeps_the_last_with_a_warning(tmp_path: Path) -> None:
    # YAML (and so mergekit) keeps the last value; the first one is the ignored key
    cfg = _load(tmp_path, DUPLICATE)
    assert cfg.merge_method == "linear"
    assert [(k.path, k.line) for k in cfg.ignored] == [("merge_method", 2)]
    assert "given again at line 4" in cfg.ignored[0].reason


def test_single_conditional_mapping_is_one_entry_list() -> None:
    cfg = parse_config(
        {
            "merge_method": "linear",
            "models": [{"model": "a", "parameters": {"weight": {"filter": "mlp", "value": 2}}}],
        }
    )
    assert cfg.models is not None
    assert cfg.models[0].parameters["weight"] == (Conditional(2, "mlp"),)


def test_modules_beside_models_is_a_clear_error() -> None:
    # `tokenizer_source: union` is read now (tests/tokenizer/test_config.py), `modules:` too
    # (tests/compat/test_modules.py); `modules:` beside `models:` is one definition too many
    with pytest.raises(ConfigError) as e:
        parse_config(
            {
                "merge_method": "linear",
                "models": [{"model": "a", "parameters": {"weight": 1}}],
                "modules": {},
            }
        )
    msgs = " | ".join(i.message for i in e.value.issues)
    assert "exactly one of `models:`, `slices:` or `modules:`" in msgs


def test_lora_reference_is_parsed() -> None:
    cfg = parse_config(
        {"merge_method": "passthrough", "models": [{"model": "base@main+adapters/persona"}]}
    )
    assert cfg.models is not None
    ref = cfg.models[0].model
    assert ref.path == "base" and ref.revision == "main"
    assert ref.lora == ModelRef("adapters/persona")


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    err = _errors(tmp_path, "merge_method: linear\nmodels: [\n  - a\n")
    assert err.issues[0].line is not None and "not valid YAML" in err.issues[0].message


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("merge_method: linear\nmodels: 3\n", ":2: models:", "non-empty list"),
        ("merge_method: linear\nslices:\n  - sources: 5\n", ":3: slices[0].sources:", "non-empty"),
        ("merge_method: ties\nmodels: {a: 1}\n", ":2: models:", "non-empty list"),
    ],
)
def test_models_or_sources_of_the_wrong_type_are_config_errors(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    rendered = str(_errors(tmp_path, text))
    assert where in rendered and message in rendered


def test_a_global_parameter_set_only_per_model_is_named_when_missing(tmp_path: Path) -> None:
    # mergekit ignores the per-model `t`, then fails: slerp's `t` is required
    err = _errors(
        tmp_path,
        """
        merge_method: slerp
        base_model: a
        models:
          - model: a
          - model: b
            parameters: {t: 0.5}
        """,
    )
    assert [(i.path, i.line) for i in err.issues] == [("models[1].parameters.t", 7)]
    assert "slerp needs the parameter 't', which is set nowhere" in err.issues[0].message
    assert "did you mean 'parameters.t'?" in err.issues[0].message


def test_a_misplaced_weight_explains_only_its_own_source(tmp_path: Path) -> None:
    err = _errors(
        tmp_path,
        """
        merge_method: linear
        slices:
          - sources:
              - {model: a, layer_range: [0, 2]}
              - {model: b, layer_range: [0, 2], weight: 1}
        """,
    )
    # only b's missing weight is explained by b's misplaced key; a's is the planner's to report
    assert [(i.path, i.line) for i in err.issues] == [("slices[0].sources[1].weight", 6)]
    assert "set nowhere for slices[0].sources[1]" in err.issues[0].message


def test_a_key_given_three_times_keeps_the_last(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        """
        merge_method: linear
        models: [{model: a, parameters: {weight: 1}}]
        parameters:
          normalize: true
          normalize: false
          normalize: true
        """,
    )
    assert cfg.parameters == {"normalize": True}
    assert [(k.path, k.line) for k in cfg.ignored] == [
        ("parameters.normalize", 5),
        ("parameters.normalize", 6),
    ]
    assert all("the value at line 7 is used" in k.render("c.yml") for k in cfg.ignored)
    err = _errors(tmp_path, (tmp_path / "config.yml").read_text(), strict=True)
    assert [i.line for i in err.issues] == [6, 7]
