"""What `alloy methods` prints about each method, without importing torch: ``catalog.json``.

The registry (`alloy.methods.registry`) holds the methods themselves, which are torch
functions; importing it costs torch's import (about a second). The catalog is the part of each
entry that describes it (name, summary, paper, base policy, number of models, the parameters
with their defaults), stored beside this module and read with ``json`` alone, so that listing
and describing the methods answers at once. ``tests/methods/test_catalog.py`` checks that it
equals what the registry says; after adding or changing a method, rewrite it with::

    python -m alloy.methods.catalog --write
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloy.errors import UnknownMethodError

if TYPE_CHECKING:
    from alloy.methods.registry import MethodSpec, Params

CATALOG = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class Field:
    """A parameter as YAML writes it (its alias when it has one) and its default as text
    (``None``: required)."""

    name: str
    default: str | None


@dataclass(frozen=True)
class MethodInfo:
    """The description of one registered method (`alloy.methods.registry.MethodSpec`)."""

    name: str
    summary: str
    paper: str
    base: str
    min_models: int
    max_models: int | None
    params: tuple[Field, ...]
    model_params: tuple[Field, ...]
    randomized: bool


def _fields(schema: type[Params]) -> tuple[Field, ...]:
    from pydantic_core import PydanticUndefined

    return tuple(
        Field(f.alias or name, None if f.default is PydanticUndefined else str(f.default))
        for name, f in schema.model_fields.items()
    )


def info_of(spec: MethodSpec) -> MethodInfo:
    """The description of a registered method, from the registry."""
    return MethodInfo(
        name=spec.name,
        summary=spec.summary,
        paper=spec.paper,
        base=spec.base,
        min_models=spec.min_models,
        max_models=spec.max_models,
        params=_fields(spec.params),
        model_params=_fields(spec.model_params),
        randomized=spec.randomized,
    )


def registry_catalog() -> list[MethodInfo]:
    """Every registered method's description, by name (imports the registry, and torch)."""
    from alloy.methods.registry import all_methods

    return [info_of(spec) for spec in all_methods()]


def _from_json(entry: dict[str, Any]) -> MethodInfo:
    fields = {k: tuple(Field(**f) for f in entry[k]) for k in ("params", "model_params")}
    return MethodInfo(**{**entry, **fields})


@cache
def load_catalog() -> dict[str, MethodInfo]:
    """The stored descriptions, by method name (sorted)."""
    entries = json.loads(CATALOG.read_text(encoding="utf-8"))
    return {e["name"]: _from_json(e) for e in entries}


def method_info(name: str) -> MethodInfo:
    """The stored description of the method ``name``; an unknown name is an
    `UnknownMethodError` with a did-you-mean."""
    catalog = load_catalog()
    try:
        return catalog[name]
    except KeyError:
        raise UnknownMethodError(name, sorted(catalog)) from None


def catalog_text(infos: list[MethodInfo]) -> str:
    """``catalog.json``'s contents for ``infos``."""
    return json.dumps([asdict(i) for i in infos], indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """``--write``: rewrite catalog.json from the registry; ``--check``: exit 1 if it differs."""
    if argv not in (["--write"], ["--check"]):
        print("usage: python -m alloy.methods.catalog --write | --check", file=sys.stderr)
        return 2
    text = catalog_text(registry_catalog())
    if argv == ["--write"]:
        CATALOG.write_text(text, encoding="utf-8")
        return 0
    current = CATALOG.read_text(encoding="utf-8") if CATALOG.exists() else ""
    if current != text:
        print(f"{CATALOG} is out of date: run python -m alloy.methods.catalog --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
