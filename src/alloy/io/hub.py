"""Resolving model references to local directories.

Order: a local directory (relative to the working directory, then to the config file's
folder); then ``org/name[@revision]`` in the local Hugging Face cache, without network; then,
only if ``huggingface_hub`` is installed and ``HF_HUB_OFFLINE`` is not set, a download of the
weights, configs and tokenizer files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from alloy.config.schema import ModelRef
from alloy.errors import ModelNotFoundError
from alloy.io.gguf.view import find_gguf, gguf_view

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


def _from_cache(repo_id: str, revision: str | None) -> Path | None:
    repo_dir = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        return None
    rev = revision or "main"
    ref_file = repo_dir / "refs" / rev
    commit = ref_file.read_text().strip() if ref_file.is_file() else rev
    snap = repo_dir / "snapshots" / commit
    return snap if snap.is_dir() else None


def _download(repo_id: str, revision: str | None) -> Path | None:
    """The downloaded snapshot; None when downloads are off (offline, no huggingface_hub).
    A refusal of the hub (no such repository or revision, gated) or a network failure is a
    `ModelNotFoundError` saying which, with the hub's error as its cause."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        return None
    name = repo_id + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except GatedRepoError as e:
        raise ModelNotFoundError(
            f"model {name} is gated on the Hugging Face hub: accept its terms on its page and "
            "log in (`hf auth login`), or give a local path."
        ) from e
    except RevisionNotFoundError as e:
        raise ModelNotFoundError(
            f"model {name}: the Hugging Face hub has no revision {revision!r} of {repo_id}."
        ) from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(
            f"model {name} is not on the Hugging Face hub, or it is private (log in with "
            "`hf auth login`); it is not a local directory either."
        ) from e
    except Exception as e:  # network, disk, anything else the download raises: keep it
        raise ModelNotFoundError(
            f"model {name} is not in the Hugging Face cache ({hf_cache_dir()}) and downloading "
            f"it failed: {type(e).__name__}: {e}. Check the network, or download it first "
            f"(`hf download {repo_id}`) or give a local path."
        ) from e


def resolve_model(ref: ModelRef, config_dir: Path | None = None) -> Path:
    """The local directory holding ``ref``'s checkpoint (or adapter); ``ref.lora`` is not
    looked at: the planner resolves a ``base+adapter`` reference's two parts separately."""
    candidates = [Path(ref.path).expanduser()]
    if config_dir is not None and not Path(ref.path).is_absolute():
        candidates.append(config_dir / ref.path)
    for c in candidates:
        gguf = find_gguf(c)  # a .gguf file, or a directory holding one: its model view
        if gguf is not None:
            return gguf_view(gguf)
        if c.is_dir():
            if ref.revision:
                raise ModelNotFoundError(
                    f"{ref}: '@{ref.revision}' selects a hub revision, but {c} is a local "
                    "directory; remove the revision."
                )
            return c.resolve()
        if c.is_file():
            raise ModelNotFoundError(
                f"{ref}: {c} is a file; give the directory that holds config.json and the "
                "weights, or a .gguf file."
            )
    if _REPO_ID.match(ref.path):
        found = _from_cache(ref.path, ref.revision) or _download(ref.path, ref.revision)
        if found is not None:
            return found
        raise ModelNotFoundError(
            f"model {ref} is not a local directory and is not in the Hugging Face cache "
            f"({hf_cache_dir()}); download it first (`huggingface-cli download {ref.path}`) or "
            "give a local path."
        )
    raise ModelNotFoundError(
        f"model path {ref.path} does not exist (looked in {', '.join(str(c) for c in candidates)})."
    )
