"""The analysis seeds the search: `alloy recommend`'s config becomes the first trial when the
space can express it, and is measured beside the trials otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloy.methods.registry import get_method
from alloy.search.space import METHOD, SearchSpace


def _resolve(value: Any, config_dir: Path | None) -> str:
    text = str(value.get("model") if isinstance(value, dict) else value)
    path = Path(text.split("+")[0])
    if config_dir is not None and not path.is_absolute() and (config_dir / path).exists():
        return str((config_dir / path).resolve()) + text[len(text.split("+")[0]) :]
    return str(path.resolve()) + text[len(text.split("+")[0]) :] if path.exists() else text


def model_refs(space: SearchSpace) -> list[str] | None:
    """The merged models of the space (absolute where they are paths), or None with slices."""
    models = space.document.get("models")
    if not isinstance(models, list):
        return None
    config_dir = Path(space.source).parent if space.source else None
    base = space.document.get("base_model")
    refs = [_resolve(m, config_dir) for m in models]
    base_ref = _resolve(base, config_dir) if base is not None else None
    return [r for r in refs if r != base_ref]


def _at(config: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        if isinstance(part, int):
            if not isinstance(config, list) or part >= len(config):
                return None
            config = config[part]
        else:
            if not isinstance(config, dict) or part not in config:
                return None
            config = config[part]
    return config


def _same_base(space: SearchSpace, rec: dict[str, Any]) -> bool:
    config_dir = Path(space.source).parent if space.source else None
    ours, theirs = space.document.get("base_model"), rec.get("base_model")
    if ours is None or theirs is None:
        return ours is None and theirs is None
    return _resolve(ours, config_dir) == _resolve(theirs, None)


def _default(method: str, name: str) -> Any:
    """The default of ``method``'s parameter ``name`` (YAML name), None when it has none."""
    spec = get_method(method)
    for schema in (spec.params, spec.model_params):
        for field_name, f in schema.model_fields.items():
            if (f.alias or field_name) == name and not f.is_required():
                return f.default
    return None


def seed_values(space: SearchSpace, rec: dict[str, Any]) -> dict[str, Any] | None:
    """The space's values for the recommended config ``rec`` (the values it does not set are
    left to the sampler), or None when the space cannot express it (another method, or a
    base model the space does not use)."""
    method = str(rec.get(METHOD))
    if method not in space.methods or not _same_base(space, rec):
        return None
    values: dict[str, Any] = {METHOD: method} if space.param(METHOD) else {}
    for p in space.params:
        if p.name == METHOD or not space.applies(p, method):
            continue
        v = _at(rec, p.loc)
        if v is None:
            v = _default(method, str(p.loc[-1]))
        if p.choices is not None and v in p.choices:
            values[p.name] = v
        elif p.choices is None and isinstance(v, int | float) and p.low <= v <= p.high:  # type: ignore[operator]
            values[p.name] = int(v) if p.integer else float(v)
    return values
