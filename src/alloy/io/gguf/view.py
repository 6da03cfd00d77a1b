"""A GGUF file as a model directory: the "view" every Alloy command opens it through.

A model reference naming a ``.gguf`` file, or a directory holding one (and no Hugging Face
checkpoint), resolves to a small cached directory that holds the ``config.json`` and tokenizer
files built from the GGUF metadata, a symlink to the GGUF file and ``alloy-gguf.json`` naming
it. Everything that reads a model directory (compatibility checks, tokenizer copies, model
cards) reads the view; the weights are read lazily from the GGUF file itself (`GGUFSource`).
Views live under ``$ALLOY_CACHE_DIR`` (default ``$XDG_CACHE_HOME/alloy`` or ``~/.cache/alloy``),
keyed by the file's absolute path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from alloy.errors import CheckpointError, ModelNotFoundError
from alloy.io.gguf.config import hf_config, storage_dtype
from alloy.io.gguf.reader import GGUFSource
from alloy.io.gguf.tokenizer import tokenizer_files

MARKER = "alloy-gguf.json"
VIEW_VERSION = 1


def is_gguf_file(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and path.is_file()


def find_gguf(path: Path) -> Path | None:
    """The GGUF file that ``path`` stands for: itself, the file a view names, or the single
    ``.gguf`` file of a directory that holds no Hugging Face checkpoint; None otherwise."""
    if is_gguf_file(path):
        return path.resolve()
    if not path.is_dir():
        return None
    marker = path / MARKER
    if marker.is_file():
        try:
            return Path(json.loads(marker.read_text())["gguf"])
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{marker} is corrupt ({e!r}); delete {path}.") from e
    found = sorted(p for p in path.glob("*.gguf") if p.is_file())
    hf_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if not found or hf_weights:
        return None
    if len(found) > 1:
        raise ModelNotFoundError(
            f"{path} holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
            "give the path of the one to use."
        )
    return found[0].resolve()


def cache_root() -> Path:
    if os.environ.get("ALLOY_CACHE_DIR"):
        return Path(os.environ["ALLOY_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "alloy"


def _key(gguf: Path) -> str:
    st = gguf.stat()
    ident = f"{VIEW_VERSION}\0{gguf}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def model_files(source: GGUFSource) -> dict[str, dict[str, Any]]:
    """``config.json`` and the tokenizer files (when the vocabulary can be rebuilt) of a GGUF."""
    matrices = [source.info(n).dtype for n in source.names() if len(source.info(n).shape) == 2]
    files = {"config.json": hf_config(source.file, source.spec, storage_dtype(matrices))}
    files.update(tokenizer_files(source.file.metadata) or {})
    return files


def write_model_files(files: dict[str, dict[str, Any]], directory: Path) -> None:
    for name, data in files.items():
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        (directory / name).write_text(text, encoding="utf-8")


def gguf_view(gguf: Path) -> Path:
    """The view directory of GGUF file ``gguf`` (built on first use)."""
    gguf = gguf.resolve()
    root = cache_root() / "gguf"
    view = root / f"{gguf.stem}-{_key(gguf)}"
    if (view / MARKER).is_file():
        return view
    source = GGUFSource(gguf)
    try:
        files = model_files(source)
    finally:
        source.close()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        write_model_files(files, tmp)
        (tmp / gguf.name).symlink_to(gguf)
        (tmp / MARKER).write_text(json.dumps({"gguf": str(gguf)}) + "\n")
        try:
            tmp.rename(view)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise CheckpointError(
            f"cannot write the model view of {gguf} under {root} ({e}); set ALLOY_CACHE_DIR "
            "to a writable directory."
        ) from e
    return view


def read_model_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a model directory, view or GGUF file ({} when there is none)."""
    from alloy.io.sources import read_json

    gguf = find_gguf(path)
    if gguf is not None and not (path / "config.json").is_file():
        path = gguf_view(gguf)
    cfg = path / "config.json"
    return read_json(cfg) if cfg.is_file() else {}
