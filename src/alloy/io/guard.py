"""The input guard: no path Alloy writes or deletes may be, contain or lie inside an input.

Inputs are compared by real path (symbolic links resolved, so the ``blobs/`` a Hugging Face
cache snapshot links to count as the input too) and by inode (hard links).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from alloy.errors import OutputError

if TYPE_CHECKING:
    from alloy.config.schema import ModelRef

_MAX_ENTRIES = 200_000  # a model directory holds a few dozen files; bound a hostile tree


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


class InputGuard:
    """The real paths and inodes of a run's inputs."""

    def __init__(self, inputs: Iterable[Path]) -> None:
        self.dirs: dict[str, Path] = {}  # real path -> the input it belongs to
        self.files: dict[str, Path] = {}
        self.inodes: dict[tuple[int, int], Path] = {}
        for p in inputs:
            self._add(Path(p).expanduser())

    def _add(self, p: Path) -> None:
        real = os.path.realpath(p)
        if os.path.isdir(real):
            self.dirs[real] = p
            self._walk(real, p)
        elif os.path.exists(real):
            self._file(real, p)

    def _file(self, path: str, owner: Path) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        real = os.path.realpath(path)
        self.files[real] = owner
        linked_in = os.path.islink(path) and not _inside(real, os.path.realpath(owner))
        if linked_in and os.path.basename(os.path.dirname(real)) == "blobs":
            # a Hugging Face snapshot's file links into the cache's blobs/: that directory is
            # the input's too. (Another linked file, such as the .gguf a GGUF view links to, is
            # protected as a file, by path and inode: not the whole directory holding it.)
            self.dirs.setdefault(os.path.dirname(real), owner)
        if stat.S_ISREG(st.st_mode):
            self.inodes[(st.st_dev, st.st_ino)] = owner

    def _walk(self, root: str, owner: Path) -> None:
        seen = 0
        for here, dirs, files in os.walk(root, followlinks=False):
            for d in dirs:
                full = os.path.join(here, d)
                if os.path.islink(full):
                    self.dirs.setdefault(os.path.realpath(full), owner)
            for f in files:
                self._file(os.path.join(here, f), owner)
            seen += len(dirs) + len(files)
            if seen > _MAX_ENTRIES:
                return

    def _refuse(self, what: str, target: Path, owner: Path, how: str) -> OutputError:
        return OutputError(
            f"{what} {target} overlaps the input model {owner} (it {how} it, comparing real paths); "
            "Alloy never writes or deletes its inputs. Choose another path."
        )

    def check_target(self, target: Path, what: str) -> None:
        """Refuse ``target`` (to be written or replaced) if it overlaps an input."""
        real = os.path.realpath(target)
        for d, owner in self.dirs.items():
            if _inside(real, d):
                how = "is" if real == d else "lies inside"
                raise self._refuse(what, target, owner, how)
            if _inside(d, real):
                raise self._refuse(what, target, owner, "contains")
        for f, owner in self.files.items():
            if _inside(f, real):
                raise self._refuse(what, target, owner, "is or contains a file of")
        try:
            st = os.stat(target)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in self.inodes:
            owner = self.inodes[(st.st_dev, st.st_ino)]
            raise self._refuse(what, target, owner, "is a hard link to a file of")

    def check_tree(self, root: Path, what: str) -> None:
        """Refuse if any regular file under ``root`` (links not followed) is an input's inode."""
        stack = [str(root)]
        seen = 0
        while stack and seen < _MAX_ENTRIES:
            here = stack.pop()
            try:
                st = os.stat(here, follow_symlinks=False)
            except OSError:
                continue
            seen += 1
            if stat.S_ISDIR(st.st_mode):
                try:
                    stack += [os.path.join(here, n) for n in os.listdir(here)]
                except OSError:
                    continue
            elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) in self.inodes:
                owner = self.inodes[(st.st_dev, st.st_ino)]
                raise self._refuse(what, Path(here), owner, "is a hard link to a file of")


def input_guard(inputs: Iterable[Path]) -> InputGuard:
    return InputGuard(inputs)


def model_paths(refs: Iterable[str | None]) -> list[Path]:
    """The directories of model references (``base+adapter`` gives both), for the guard of a
    command that writes; a reference that does not resolve is skipped (its command reports it)."""
    from alloy.config.modelref import parse_model_ref
    from alloy.config.schema import ModelRef
    from alloy.errors import AlloyError

    out: list[Path] = []
    for text in refs:
        if text is None:
            continue
        try:
            ref = parse_model_ref(text)
            parts = [ModelRef(ref.path, ref.revision), *([ref.lora] if ref.lora else [])]
        except (AlloyError, ValueError):
            out.append(Path(text))
            continue
        for part in parts:
            local = Path(part.path).expanduser()
            found = None if local.exists() else _cached(part)
            out.append(found or local)
    return out


def _cached(ref: ModelRef) -> Path | None:
    """The Hugging Face cache snapshot of a repo id, without any download."""
    from alloy.io.hub import _from_cache

    try:
        return _from_cache(ref.path, ref.revision)
    except (OSError, ValueError):
        return None


def guard_write(target: Path, inputs: Iterable[Path], what: str) -> None:
    """Refuse to write ``target`` (a file or directory) when it overlaps one of ``inputs``."""
    input_guard(inputs).check_target(Path(target), what)
