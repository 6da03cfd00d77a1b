"""Reading an output's ``report.json`` defensively: UTF-8 JSON of the shape Alloy writes.

A report that was edited or truncated is an `OutputError` naming the file and the key, never a
KeyError or a UnicodeDecodeError deep inside the renderer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloy.errors import CheckpointError, OutputError
from alloy.io.safefile import loads_strict, read_bytes

_NUM = (int, float)
# key -> the type its value must have; a dict spec is a nested object, a one-item list is a
# list of that spec; a key ending in "?" may be missing or null.
_SHAPE: dict[str, Any] = {
    "name": str,
    "merge": {
        "method": str,
        "config_yaml": str,
        "models": [{"label": str, "path": str}],
        "tensors": int,
        "bytes_written": int,
    },
    "inventory": [dict],
    "rationale": {"description": str, "statements?": list, "facts?": dict},
    "warnings?": [str],
    "distance?": {"merged": {"layers": dict}, "sources": [{"model": str, "layers": dict}]},
    "evaluation?": {"models": [{"label": str, "role": str, "path": str}], "sets": [dict]},
    "run": {
        "merge_seconds": _NUM,
        "wall_seconds": _NUM,
        "peak_rss_merge_bytes": _NUM,
        "peak_rss_bytes": _NUM,
        "eval_seconds?": _NUM,
    },
}


def _bad(path: Path, where: str, expected: str) -> OutputError:
    return OutputError(
        f"{path}: `{where or 'the report'}` must be {expected}; the report is corrupt. Merge "
        "again, or restore report.json."
    )


def _check(value: Any, spec: Any, where: str, path: Path) -> None:
    def bad(expected: str) -> OutputError:
        return _bad(path, where, expected)

    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise bad("an object")
        for key, sub in spec.items():
            name, optional = key.rstrip("?"), key.endswith("?")
            child = f"{where}.{name}" if where else name
            if value.get(name) is None:
                if optional:
                    continue
                raise _bad(path, child, "present" if name not in value else "set, not null")
            _check(value[name], sub, child, path)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise bad("a list")
        for i, item in enumerate(value):
            _check(item, spec[0], f"{where}[{i}]", path)
    elif not isinstance(value, spec) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in (spec if isinstance(spec, tuple) else (spec,)))
        raise bad(f"of type {names}")


def load_report_json(path: Path) -> dict[str, Any]:
    """The parsed ``report.json`` at ``path``, its shape checked."""
    try:
        data = loads_strict(read_bytes(path, 50_000_000), path, constants=True, what="report")
    except CheckpointError as e:
        raise OutputError(str(e)) from None
    if not isinstance(data, dict):
        raise OutputError(f"{path}: a report is a JSON object; the report is corrupt.")
    return data


def check_report_shape(report: dict[str, Any], path: Path) -> None:
    _check(report, _SHAPE, "", path)
