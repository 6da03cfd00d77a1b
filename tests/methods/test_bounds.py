"""Parameter bounds live in the schemas: a bad value is a config error when the merge is
planned, naming the model and the parameter, before any tensor is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from checkpoints import ModelSet
from pydantic import ValidationError

from alloy.errors import ConfigError
from alloy.methods import get_method


def ties_config(models: ModelSet, per_model: dict[str, Any], **global_: Any) -> dict[str, Any]:
    return {
        "merge_method": "ties",
        "base_model": str(models.base),
        "models": [
            {"model": str(models.ft1), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(models.ft2), "parameters": {"weight": 1.0, "density": 0.5, **per_model}},
        ],
        "parameters": global_,
    }


@pytest.mark.parametrize(
    ("per_model", "global_", "name"),
    [
        ({"density": -0.5}, {}, "density"),
        ({"density": float("nan")}, {}, "density"),
        ({"weight": float("inf")}, {}, "weight"),
        ({"weight": 1e300}, {}, "weight"),  # Σ |w| would overflow math.fsum's float range
        ({}, {"lambda": float("nan")}, "lambda"),
    ],
)
def test_a_bad_value_is_a_config_error_at_plan_time(
    llama_models: ModelSet, per_model: dict[str, Any], global_: dict[str, Any], name: str
) -> None:
    import alloy

    with pytest.raises(ConfigError, match=rf"parameter '{name}'"):
        alloy.plan(ties_config(llama_models, per_model, **global_))


def test_a_bad_value_is_reported_before_the_merge_writes(
    llama_models: ModelSet, tmp_path: Path
) -> None:
    import alloy

    with pytest.raises(ConfigError, match=r"models\[1\].*density"):
        alloy.merge(ties_config(llama_models, {"density": -0.5}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("method", "schema", "values", "name"),
    [
        ("breadcrumbs", "model", {"weight": 1.0, "gamma": 1.5}, "gamma"),
        ("della", "model", {"weight": 1.0, "epsilon": -0.1}, "epsilon"),
        ("slerp", "global", {"t": 1.5}, "t"),
        ("slerp", "global", {"t": float("nan")}, "t"),
        ("karcher", "global", {"max_iter": 10**9}, "max_iter"),  # a huge value ran for hours
        ("karcher", "global", {"max_iter": -1}, "max_iter"),
        ("karcher", "global", {"tol": -1e-5}, "tol"),
        ("sce", "global", {"select_topk": 2.0}, "select_topk"),
        ("nearswap", "global", {"t": -0.1}, "t"),
        ("multislerp", "global", {"eps": -1.0}, "eps"),
        ("linear", "model", {"weight": float("nan")}, "weight"),
        ("passthrough", "model", {"scale": float("inf")}, "scale"),
        ("ram", "global", {"epsilon": -1.0}, "epsilon"),
    ],
)
def test_the_schemas_bound_every_numeric_parameter(
    method: str, schema: str, values: dict[str, Any], name: str
) -> None:
    spec = get_method(method)
    model = spec.model_params if schema == "model" else spec.params
    with pytest.raises(ValidationError, match=name):
        model.model_validate(values)


def test_density_above_one_keeps_everything_as_in_mergekit() -> None:
    # mergekit's sparsifiers return the task vector unchanged for density >= 1
    schema = get_method("ties").model_params
    assert schema.model_validate({"weight": 1.0, "density": 1.5}).density == 1.5
