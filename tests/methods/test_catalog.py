"""The stored catalog `alloy methods` answers from (`alloy.methods.catalog`) is the registry's."""

from __future__ import annotations

import pytest

from alloy.errors import UnknownMethodError
from alloy.methods import all_methods, get_method
from alloy.methods.catalog import (
    CATALOG,
    Field,
    catalog_text,
    info_of,
    load_catalog,
    method_info,
    registry_catalog,
)
from alloy.methods.describe import describe_method


def test_the_stored_catalog_is_the_registry() -> None:
    # if this fails after a method changed: python -m alloy.methods.catalog --write
    assert list(load_catalog().values()) == registry_catalog()
    assert CATALOG.read_text(encoding="utf-8") == catalog_text(registry_catalog())


def test_every_registered_method_is_described() -> None:
    assert list(load_catalog()) == [spec.name for spec in all_methods()]


def test_fields_carry_aliases_defaults_and_required() -> None:
    ties = method_info("ties")
    assert Field("lambda", "1.0") in ties.params  # the alias YAML uses, not `lambda_`
    assert ties.model_params == (Field("weight", None), Field("density", "1.0"))
    assert method_info("dare_ties").randomized and not ties.randomized
    assert method_info("slerp").params == (Field("t", None),)


def test_description_from_the_catalog_names_the_paper_and_the_defaults() -> None:
    text = describe_method(method_info("ties"))
    assert "2306.01708" in text and "density = 1.0" in text and "weight (required)" in text
    assert "random:" in describe_method(info_of(get_method("dare_ties")))


def test_an_unknown_name_is_a_typed_error_with_a_suggestion() -> None:
    with pytest.raises(UnknownMethodError, match="Did you mean 'slerp'"):
        method_info("slrep")
