"""GGUF (llama.cpp's format) as an input and an output: a lazy tensor source under Hugging Face
names, the model directory "view" of a GGUF file, and a GGUF writer. The ``gguf`` package is
imported only when a GGUF file is read or written (``pip install 'alloy-merge[gguf]'``)."""

from __future__ import annotations

from alloy.io.gguf.reader import GGUFSource
from alloy.io.gguf.view import find_gguf, gguf_view, read_model_config

__all__ = ["GGUFSource", "find_gguf", "gguf_view", "read_model_config"]
