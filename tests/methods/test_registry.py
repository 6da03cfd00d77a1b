"""The registrations: names, parameters and defaults as in mergekit 0.1.5, and the flags."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from pydantic_core import PydanticUndefined

from alloy.methods import all_methods, get_method
from alloy.methods.registry import method

from .helpers import merge

REQUIRED = object()

# name -> (global params with defaults, per-model params with defaults, base, min, max,
#          chunked (fed row chunks), randomized); written from mergekit's method definitions.
GTA_GLOBALS = {"int8_mask": False, "normalize": False, "rescale": False, "lambda": 1.0}
GTA_MODEL = {"weight": REQUIRED, "density": 1.0}
EXPECTED: dict[str, tuple[dict[str, Any], dict[str, Any], str, int, int | None, bool, bool]] = {
    "linear": ({"normalize": True}, {"weight": REQUIRED}, "none", 1, None, True, False),
    "slerp": ({"t": REQUIRED}, {}, "required", 1, 1, True, False),
    "multislerp": (
        {"normalize_weights": True, "eps": 1e-8},
        {"weight": REQUIRED},
        "optional",
        1,
        None,
        False,
        False,
    ),
    "task_arithmetic": (GTA_GLOBALS, GTA_MODEL, "required", 1, None, True, False),
    "ties": ({**GTA_GLOBALS, "normalize": True}, GTA_MODEL, "required", 1, None, True, False),
    "dare_ties": ({**GTA_GLOBALS, "rescale": True}, GTA_MODEL, "required", 1, None, True, True),
    "dare_linear": ({**GTA_GLOBALS, "rescale": True}, GTA_MODEL, "required", 1, None, True, True),
    "passthrough": ({}, {"scale": None}, "none", 1, 1, True, False),
    "nuslerp": (
        {"nuslerp_row_wise": False, "nuslerp_flatten": True},
        {"weight": REQUIRED},
        "optional",
        2,
        2,
        False,
        False,
    ),
    "karcher": ({"max_iter": 10, "tol": 1e-5}, {}, "none", 1, None, False, False),
    "breadcrumbs": (GTA_GLOBALS, {**GTA_MODEL, "gamma": 0.01}, "required", 1, None, True, False),
    "breadcrumbs_ties": (
        GTA_GLOBALS,
        {**GTA_MODEL, "gamma": 0.01},
        "required",
        1,
        None,
        True,
        False,
    ),
    "della": (
        {**GTA_GLOBALS, "normalize": True, "rescale": True},
        {**GTA_MODEL, "epsilon": 0.15},
        "required",
        1,
        None,
        False,
        True,
    ),
    "della_linear": (
        {**GTA_GLOBALS, "rescale": True},
        {**GTA_MODEL, "epsilon": 0.15},
        "required",
        1,
        None,
        False,
        True,
    ),
    "sce": ({"int8_mask": False, "select_topk": 1.0}, {}, "required", 1, None, False, False),
    "model_stock": ({"filter_wise": False}, {}, "required", 2, None, False, False),
    "nearswap": ({"t": REQUIRED}, {}, "required", 1, 1, True, False),
    "arcee_fusion": ({}, {}, "required", 1, 1, False, False),
    "ram": ({"epsilon": 1e-5}, {}, "required", 1, None, True, False),
    "ramplus_tl": (
        {"r": 0.1, "alpha": 0.2, "epsilon": 1e-5},
        {},
        "required",
        1,
        None,
        False,
        False,
    ),
}
# Alloy-only methods (no mergekit counterpart): the papers' parameters and defaults.
ALLOY_ONLY = {
    "tsv": ({"alpha": 1.0, "rank_fraction": None}, {}, "required", 1, None, False, False),
    "iso_c": ({"alpha": 1.0}, {}, "required", 1, None, False, False),
    "iso_cts": (
        {"alpha": 1.0, "common_space_fraction": 0.8},
        {},
        "required",
        1,
        None,
        False,
        False,
    ),
}
ALL = {**EXPECTED, **ALLOY_ONLY}
# Required global parameters, for calling a method in the generic tests below.
REQUIRED_PARAMS = {"slerp": {"t": 0.4}, "nearswap": {"t": 0.5}}


def defaults(schema: Any) -> dict[str, Any]:
    return {
        (f.alias or name): REQUIRED if f.default is PydanticUndefined else f.default
        for name, f in schema.model_fields.items()
    }


@pytest.mark.parametrize("name", sorted(ALL))
def test_registration(name: str) -> None:
    spec = get_method(name)
    globals_, per_model, base, lo, hi, chunked, randomized = ALL[name]
    assert defaults(spec.params) == globals_
    assert defaults(spec.model_params) == per_model
    assert spec.param_names() == list(globals_)
    assert (spec.base, spec.min_models, spec.max_models) == (base, lo, hi)
    assert (spec.feeding != "whole", spec.randomized) == (chunked, randomized)
    assert spec.paper and spec.summary


def test_every_method_is_registered_and_mergekit_has_no_other() -> None:
    from mergekit import merge_methods

    assert {s.name for s in all_methods()} == set(ALL)
    theirs = {m.spec.name for m in merge_methods.registered_methods()}
    assert theirs == set(EXPECTED), "a mergekit method Alloy lacks, or a stale entry"


def test_only_the_svd_methods_treat_embeddings_differently() -> None:
    assert {s.name for s in all_methods() if s.embedding_fn is not None} == set(ALLOY_ONLY)


def test_params_are_frozen_and_reject_unknown_keys() -> None:
    spec = get_method("ties")
    params = spec.params.model_validate({"lambda": 0.5})
    with pytest.raises(ValueError):
        params.normalize = False  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        spec.params.model_validate({"normalise": True})


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(ALL) if ALL[n][5] and not ALL[n][6] and get_method(n).feeding == "rows"],
)
def test_elementwise_methods_can_be_fed_row_chunks(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(12, 5, generator=g)
    spec = get_method(name)
    n = spec.max_models or 3
    xs = [base + torch.randn(12, 5, generator=g) for _ in range(n)]
    mps = [{"weight": 0.3 + i} for i in range(n)] if "weight" in spec.model_param_names() else [{}]
    b = base if spec.base != "none" else None
    params = REQUIRED_PARAMS.get(name, {})
    whole = merge(name, xs, b, params=params, model_params=mps)
    rows = [
        merge(
            name,
            [x[i : i + 4] for x in xs],
            None if b is None else b[i : i + 4],
            params=params,
            model_params=mps,
        )
        for i in range(0, 12, 4)
    ]
    torch.testing.assert_close(torch.cat(rows), whole)


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_names_and_defaults_match_mergekit(name: str) -> None:
    from mergekit import merge_methods
    from mergekit.merge_methods.base import MISSING, ParameterScope

    theirs = merge_methods.get(name).spec.parameters
    their_globals = {
        p.name: REQUIRED if p.default is MISSING else p.default
        for p in theirs
        if p.scope == ParameterScope.SHARED
    }
    their_model = {
        p.name: REQUIRED if p.default is MISSING else p.default
        for p in theirs
        if p.scope != ParameterScope.SHARED
    }
    spec = get_method(name)
    assert defaults(spec.params) == their_globals
    assert defaults(spec.model_params) == their_model


def test_every_method_has_a_memory_factor_for_alloy_plan() -> None:
    # `overhead` is a required argument of the registration, so every method states its own
    assert {s.name for s in all_methods() if math.isfinite(s.overhead) and s.overhead >= 0} == {
        s.name for s in all_methods()
    }
    assert "overhead" not in {
        n for n, p in inspect.signature(method).parameters.items() if p.default is not p.empty
    }


def test_the_feeding_is_consistent_with_the_accelerator_and_embedding_function() -> None:
    for spec in all_methods():
        if spec.feeding == "rows_after_passes":  # only an accelerator makes reduction passes
            assert spec.accelerator is not None, spec.name
        if spec.embedding_fn is not None:
            assert spec.feeding == "whole", spec.name


def test_registration_refuses_passes_without_an_accelerator() -> None:
    def fn(*args: Any) -> torch.Tensor:
        raise AssertionError

    with pytest.raises(ValueError, match="accelerator"):
        method(
            "x_passes",
            base="none",
            paper="-",
            summary="-",
            overhead=1.0,
            feeding="rows_after_passes",
        )(fn)
    with pytest.raises(ValueError, match="whole"):
        method(
            "x_embedding",
            base="none",
            paper="-",
            summary="-",
            overhead=1.0,
            feeding="rows",
            embedding_fn=fn,
        )(fn)
