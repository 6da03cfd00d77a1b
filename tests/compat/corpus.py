"""Reading, rewriting and running the published recipes of `tests/compat/recipes/`.

Each recipe file is the YAML as published, after a header of ``# key: value`` comment lines:

- ``source``: where it was published (a URL, or ``owner/repo path``);
- ``standin``: the architecture and layer count of its models (``mistral 32``);
- ``needs``: a feature Alloy does not have yet (``tokenizer-union``): Alloy's refusal is
  expected until the feature lands (`test_corpus.PENDING`);
- ``expect``: ``same`` (the default: both tools run and give the same tensors),
  ``both-refuse`` (mergekit 0.1.5 fails and Alloy refuses with a typed error),
  ``mergekit-refuses`` (mergekit fails where `docs/compatibility.md` says Alloy does better,
  and Alloy runs it), or
  ``refuse: TEXT`` (Alloy refuses, its message contains TEXT, and `docs/compatibility.md` lists
  the reason).

A recipe is rewritten only to point at stand-ins: every model name is replaced by a stand-in
directory (the base model by the family's base, the others by its fine-tunes, in order of first
appearance), and ``dtype``/``out_dtype`` by float32 (mergekit computes in the load dtype, Alloy
in float32, `docs/compatibility.md` row 6; in float32 both compute the same thing).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RECIPES = Path(__file__).parent / "recipes"
RANDOM_METHODS = {"dare_ties", "dare_linear", "della", "della_linear"}


@dataclass(frozen=True)
class Recipe:
    name: str
    text: str
    source: str
    arch: str
    layers: int
    needs: frozenset[str] = field(default_factory=frozenset)
    expect: str = "same"

    @property
    def data(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.text)
        assert isinstance(loaded, dict), self.name
        return loaded


def load_recipe(path: Path) -> Recipe:
    text = path.read_text()
    head: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"#\s*(source|standin|needs|expect):\s*(.*)$", line)
        if not m:
            break
        head[m.group(1)] = m.group(2).strip()
    assert "source" in head and "standin" in head, f"{path.name}: header needs source and standin"
    arch, layers = head["standin"].split()
    needs = frozenset(head["needs"].split()) if "needs" in head else frozenset()
    return Recipe(
        path.stem, text, head["source"], arch, int(layers), needs, head.get("expect", "same")
    )


def all_recipes() -> list[Recipe]:
    return [load_recipe(p) for p in sorted(RECIPES.glob("*.yml"))]


def _sources(section: dict[str, Any]) -> Iterator[Any]:
    for m in section.get("models") or ():
        yield m.get("model") if isinstance(m, dict) else m
    for s in section.get("slices") or ():
        yield s.get("base_model")
        for src in s.get("sources") or ():
            yield src.get("model")


def model_names(data: dict[str, Any]) -> list[str]:
    """Every model a recipe names, base first, then in order of first appearance."""
    found: list[Any] = [data.get("base_model")]
    found += _sources(data)
    for module in (data.get("modules") or {}).values():
        found += _sources(module)
    tok = data.get("tokenizer")
    found.append(tok.get("source") if isinstance(tok, dict) else None)
    found.append(data.get("tokenizer_source"))
    names = [n for n in found if isinstance(n, str) and n not in ("union", "base")]
    return list(dict.fromkeys(names))


def rewrite(text: str, mapping: dict[str, Path]) -> str:
    """The recipe with each model name replaced by its stand-in and every dtype by float32."""
    for name in sorted(mapping, key=len, reverse=True):
        pattern = rf"(?<![\w./\\-]){re.escape(name)}(?![\w./\\-])"
        text = re.sub(pattern, lambda _m, n=name: str(mapping[n]), text)
    return re.sub(r"(?m)^(\s*(?:dtype|out_dtype):\s*)\S+", r"\g<1>float32", text)


def with_density_one(text: str) -> str:
    """The recipe with every ``density`` set to 1 (DARE and DELLA then drop nothing, and both
    tools compute the same deterministic merge: their random draws differ by design,
    `docs/compatibility.md` rows 17, 18 and 26)."""

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: (1.0 if k == "density" else walk(v)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return yaml.safe_dump(walk(yaml.safe_load(text)), sort_keys=False)


def standin_mapping(recipe: Recipe, root: Path) -> dict[str, Path]:
    from compat.standins import family

    names = model_names(recipe.data)
    base = recipe.data.get("base_model")
    others = [n for n in names if n != base]
    paths = family(root, recipe.arch, recipe.layers, len(others))
    mapping = dict(zip(others, paths[1:], strict=True))
    if isinstance(base, str):
        mapping[base] = paths[0]
    return mapping
