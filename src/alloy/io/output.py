"""The output directory: created as a temporary sibling and renamed into place when complete.

A failed or interrupted merge never leaves a directory that looks finished, an existing
non-empty directory is replaced only with ``force``, and an input model is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from alloy.errors import OutputError


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def prepare_output(out: Path, force: bool, inputs: Iterable[Path]) -> Path:
    """Validate ``out`` and create the temporary sibling the merge writes into."""
    out = out.expanduser().resolve()
    for p in inputs:
        p = p.resolve()
        if _inside(p, out) or _inside(out, p):
            raise OutputError(
                f"the output directory {out} overlaps the input model {p}; choose another "
                "output directory (Alloy never writes over its inputs)."
            )
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{out} exists and is a file; choose a directory path.")
        if any(out.iterdir()) and not force:
            raise OutputError(
                f"{out} exists and is not empty; pass --force to replace it, or choose another "
                "directory."
            )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.alloy-tmp-", dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write into {parent}: {e.strerror or e}.") from e


def commit_output(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` directory to ``out``, replacing what was there."""
    out = out.expanduser().resolve()
    old: Path | None = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.alloy-old-", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
