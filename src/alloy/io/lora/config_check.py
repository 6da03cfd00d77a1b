"""The numbers of a LoRA ``adapter_config.json``, validated before any is used.

``r`` and every ``rank_pattern`` value are positive integers; ``lora_alpha`` and every
``alpha_pattern`` value are finite numbers; the two patterns are objects of module-name
patterns (or null). Each problem is a `CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alloy.errors import CheckpointError


def _rank_ok(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _alpha_ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bad(cfg_file: Path, key: str, value: Any, want: str) -> CheckpointError:
    return CheckpointError(
        f"{cfg_file}: `{key}` is {value!r:.60}, but must be {want}; fix the adapter's config "
        "(PEFT writes these numbers itself) or save the adapter again."
    )


def check_adapter_numbers(config: dict[str, Any], cfg_file: Path) -> None:
    if "r" in config and not _rank_ok(config["r"]):
        raise _bad(cfg_file, "r", config["r"], "a positive integer (the rank)")
    if "lora_alpha" in config and not _alpha_ok(config["lora_alpha"]):
        raise _bad(cfg_file, "lora_alpha", config["lora_alpha"], "a finite number")
    for key, ok, want in (
        ("rank_pattern", _rank_ok, "a positive integer"),
        ("alpha_pattern", _alpha_ok, "a finite number"),
    ):
        pattern = config.get(key)
        if pattern is None:
            continue
        if not isinstance(pattern, dict):
            raise _bad(cfg_file, key, pattern, "an object of module patterns to numbers")
        for name, v in pattern.items():
            if not ok(v):
                raise _bad(cfg_file, f"{key}.{name}", v, want)
