"""The optional ``gguf`` package (llama.cpp's reader, writer and dequantizer), imported lazily."""

from __future__ import annotations

from typing import Any

from alloy.errors import AlloyError, CheckpointError

INSTALL_HINT = "pip install 'alloy-merge[gguf]'"


def gguf_module(error: type[AlloyError] = CheckpointError, what: str = "reading") -> Any:
    """The ``gguf`` module, or ``error`` saying which extra installs it."""
    try:
        import gguf
    except ImportError as e:
        raise error(
            f"{what} GGUF files needs the `gguf` package, which is not installed: {INSTALL_HINT}"
        ) from e
    return gguf
