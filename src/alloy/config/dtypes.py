"""The one table of dtype names: what a config, an option or an argument may call a dtype.

``dtype: bf16`` in a config, ``--dtype bfloat16`` on the command line and ``torch.bfloat16``
in a ``config.json`` all name `torch.bfloat16`; `canonical_dtype` reads every spelling and
`named_dtype` gives the torch dtype an output is stored in.
"""

from __future__ import annotations

import torch

from alloy.errors import UsageError

# canonical name -> torch dtype; every spelling below maps to one of these names
TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
_SPELLINGS = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
}
# the dtypes a merged model or adapter is written in
DTYPES: dict[str, torch.dtype] = {
    name: TORCH_DTYPES[name] for name in ("float32", "float16", "bfloat16")
}


def canonical_dtype(name: str) -> str | None:
    """``torch.bfloat16`` / ``bf16`` / ``bfloat16`` -> ``bfloat16``; None if unknown."""
    key = name.strip().lower().removeprefix("torch.")
    return _SPELLINGS.get(key)


def named_dtype(name: str, option: str = "--dtype") -> torch.dtype:
    """The storage dtype called ``name`` (a key of `DTYPES`); a `UsageError` naming the
    command-line ``option`` and the choices otherwise."""
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r} (`{option}`): use {', '.join(DTYPES)}.")
    return DTYPES[name]
