"""The output directory: created as a temporary sibling and renamed into place when complete.

What Alloy promises about your files (docs/safety.md):

- no path that is, contains or lies inside an input is ever written or deleted, comparing real
  paths (symbolic links resolved, Hugging Face cache blobs included) and inodes (hard links);
- ``force`` replaces only a directory that a previous Alloy run wrote (it carries `MARKER`,
  listing what that run wrote, and holds nothing else), and never follows a link;
- a run holds a lock on OUT for its whole duration, so two runs into one OUT cannot both win;
- the final rename swaps the directories atomically, and fails (instead of replacing) when OUT
  appeared or changed meanwhile; an interrupted run leaves the old output as it was;
- temporaries left by dead runs (killed, power loss) are removed by the next run into OUT, but
  for the one a resumed merge continues (``prepare_output(resume=True)``, `alloy.io.resume`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloy._interrupt import exit_at_once
from alloy.errors import OutputError
from alloy.io.guard import InputGuard, input_guard
from alloy.io.resume import MANIFEST, has_manifest

MARKER = ".alloy-output.json"
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


@dataclass
class _Run:
    out: Path
    lock_path: Path
    lock_fd: int
    existing: tuple[int, int] | None  # (st_dev, st_ino) of the OUT this run may replace
    names: frozenset[str] = frozenset()  # what that OUT held when it was validated


_RUNS: dict[Path, _Run] = {}


def _lexists(p: Path) -> bool:
    return os.path.lexists(p)


def _sibling_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.alloy-(tmp|old)-[A-Za-z0-9_]{{8}}$")


def _acquire_lock(out: Path) -> tuple[Path, int]:
    """Lock ``out`` against other Alloy runs (an flock on a sibling file, removed on release)."""
    lock_path = out.parent / f".{out.name}.alloy-lock"
    for _ in range(20):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise OutputError(
                f"cannot write into {out.parent} (creating the lock {lock_path.name}): "
                f"{e.strerror or e}."
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"another Alloy run is writing {out} (it holds {lock_path}); wait for it to "
                "finish or choose another output directory."
            ) from None
        try:
            same = os.stat(lock_path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return lock_path, fd
        os.close(fd)  # the holder removed it as we opened it: take the new one
    raise OutputError(f"cannot lock {out}: {lock_path} keeps changing; try again.")


def _release_lock(run: _Run) -> None:
    with suppress(OSError):
        os.unlink(run.lock_path)
    os.close(run.lock_fd)


def _dead_temporaries(out: Path) -> list[Path]:
    pattern = _sibling_re(out.name)
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return []
    return [
        Path(e.path) for e in entries if pattern.match(e.name) and e.is_dir(follow_symlinks=False)
    ]


def remove_dead_temporaries(out: Path, keep: Path | None = None) -> list[Path]:
    """Remove the ``.OUT.alloy-tmp-*`` / ``-old-*`` siblings of ``out`` (but ``keep``). Call
    only while holding ``out``'s lock: any such directory then belongs to a run that died."""
    removed = [p for p in _dead_temporaries(out) if p != keep]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def resumable_temporary(out: Path) -> Path | None:
    """The temporary of a dead run into ``out`` that recorded a resume manifest (the newest, if
    several did). Call only while holding ``out``'s lock."""
    found = [p for p in _dead_temporaries(out) if "alloy-tmp-" in p.name and has_manifest(p)]
    return max(found, key=lambda p: os.stat(p / MANIFEST).st_mtime_ns, default=None)


def _check_replaceable(
    out: Path, force: bool, guard: InputGuard, resume: tuple[bool, bool] = (False, False)
) -> tuple[int, int] | None:
    """Validate an existing ``out``: (dev, ino) of the directory a commit may replace.
    ``resume``: (whether the run resumes, whether it found an interrupted run to resume)."""
    if not _lexists(out):
        return None
    st = os.stat(out, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{out} is a symbolic link; Alloy never writes through or replaces a link. Give "
            "the real directory, or another output path."
        )
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{out} exists and is a file, not a directory; choose a directory path.")
    names = sorted(os.listdir(out))
    if names:
        if not force:
            raise OutputError(_exists_message(out, resume))
        _check_owned(out, names, guard)
    return (st.st_dev, st.st_ino)


def _exists_message(out: Path, resume: tuple[bool, bool]) -> str:
    if resume == (True, True):
        return (
            f"{out} exists and is not empty: the interrupted run was replacing it (with "
            "--force); pass --force with --resume to resume it."
        )
    if resume == (True, False) and read_marker(out) is not None:
        return (
            f"{out} is a finished Alloy output and no interrupted run of it is left: there is "
            "nothing to resume. Pass --force (without --resume) to merge into it again."
        )
    return (
        f"{out} exists and is not empty; pass --force to replace it (only an earlier Alloy "
        "output is replaced), or choose another directory."
    )


def _check_owned(out: Path, names: list[str], guard: InputGuard) -> None:
    """``--force`` may replace ``out`` only if an Alloy run wrote everything in it."""
    listed = read_marker(out)
    if listed is None:
        raise OutputError(
            f"{out} was not written by Alloy (it has no {MARKER}); --force replaces only an "
            "earlier Alloy output. Move its files away or choose another directory."
        )
    foreign = [n for n in names if n != MARKER and n not in listed]
    if foreign:
        raise OutputError(
            f"{out} holds files that Alloy did not write ({', '.join(foreign[:5])}); --force "
            "will not delete them. Move them away or choose another directory."
        )
    for n in names:
        p = out / n
        if os.path.islink(p):
            raise OutputError(
                f"{p} is a symbolic link (Alloy writes none); --force will not replace a "
                "directory holding links. Move it away or choose another directory."
            )
        guard.check_tree(p, f"--force would delete {p}")


def read_marker(out: Path) -> set[str] | None:
    """The names an Alloy run wrote into ``out`` (from its `MARKER`), or None."""
    p = out / MARKER
    try:
        if not stat.S_ISREG(os.stat(p, follow_symlinks=False).st_mode):
            return None
        with open(p, encoding="utf-8") as f:
            data = json.loads(f.read(1_000_000))
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(n, str) for n in files):
        return None
    return set(files)


def write_marker(directory: Path, what: str) -> None:
    """Record in ``directory`` that Alloy wrote every entry now in it."""
    names = sorted(n for n in os.listdir(directory) if n != MARKER)
    data = {"written_by": f"alloy {what}", "files": names}
    (directory / MARKER).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def prepare_output(out: Path, force: bool, inputs: Iterable[Path], *, resume: bool = False) -> Path:
    """Validate ``out``, lock it, and create the temporary sibling the run writes into. With
    ``resume``, the temporary of a dead run that recorded a resume manifest is the one returned
    (`alloy.io.resume` checks it) when there is one."""
    out = Path(os.path.abspath(out.expanduser()))
    guard = input_guard(inputs)
    guard.check_target(out, "the output directory")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {parent}: {e.strerror or e}.") from e
    lock_path, fd = _acquire_lock(out)
    try:
        kept = resumable_temporary(out) if resume else None
        existing = _check_replaceable(out, force, guard, (resume, kept is not None))
        remove_dead_temporaries(out, keep=kept)
        tmp = kept or Path(tempfile.mkdtemp(prefix=f".{out.name}.alloy-tmp-", dir=parent))
    except BaseException as e:
        os.unlink(lock_path)
        os.close(fd)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write into {parent}: {e.strerror or e}.") from e
        raise
    names = frozenset(os.listdir(out)) if existing is not None else frozenset()
    _RUNS[tmp] = _Run(out, lock_path, fd, existing, names)
    return tmp


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(2)``; False where the system or file system does not offer it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags))
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _swap_in(tmp: Path, run: _Run) -> Path | None:
    """Put ``tmp`` at ``run.out``; returns where the replaced directory now is, if any."""
    out = run.out
    if run.existing is None:
        if _lexists(out):
            raise OutputError(
                f"{out} appeared while the run was writing; it was left as it is and nothing "
                "was written. Remove it or choose another directory, and run again."
            )
        try:
            if not _renameat2(tmp, out, _RENAME_NOREPLACE):
                os.rename(tmp, out)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise OutputError(
                f"{out} appeared while the run was writing; it was left as it is and nothing "
                "was written. Remove it or choose another directory, and run again."
            ) from None
        return None
    try:
        st = os.stat(out, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if (
        st is None
        or (st.st_dev, st.st_ino) != run.existing
        or not stat.S_ISDIR(st.st_mode)
        or frozenset(os.listdir(out)) != run.names
    ):
        raise OutputError(
            f"{out} was changed, replaced or removed by someone else while the run was writing; "
            "it was left as it is and nothing was written. Run again."
        )
    if _renameat2(tmp, out, _RENAME_EXCHANGE):
        return tmp  # tmp's name now holds the old output
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.alloy-old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    return old


def commit_output(tmp: Path, out: Path, what: str = "run") -> None:
    """Mark the finished ``tmp`` as Alloy's and move it to ``out``, replacing (atomically) the
    earlier output validated by `prepare_output`. Signals wait until the swap is done."""
    run = _RUNS.get(tmp)
    if run is None:
        raise OutputError(f"{tmp} was not prepared by prepare_output; nothing was written.")
    with suppress(FileNotFoundError):
        os.unlink(tmp / MANIFEST)  # the resume manifest is not part of the output
    write_marker(tmp, what)
    with _signals_deferred():
        old = _swap_in(tmp, run)
        _RUNS.pop(tmp, None)
        _release_lock(run)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(tmp: Path) -> None:
    """Remove an unfinished ``tmp`` and release its output's lock."""
    shutil.rmtree(tmp, ignore_errors=True)
    release(tmp)


def release(tmp: Path) -> None:
    """Release the lock of ``tmp``'s output and leave ``tmp`` as it is (a run to resume)."""
    run = _RUNS.pop(tmp, None)
    if run is not None:
        _release_lock(run)


_CATCH = tuple(
    s
    for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
    if s is not None
)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done, then act on the first one as its
    handler would have (Python runs handlers in the main thread; elsewhere this is a no-op)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved: dict[int, Any] = {}
    for s in _CATCH:
        with suppress(OSError, ValueError):
            saved[s] = signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        if pending:
            handler = saved.get(pending[0])
            if callable(handler):
                handler(pending[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), pending[0])


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every cleanup runs; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def interrupts_cleanly() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP raise `Terminated` (a KeyboardInterrupt), so a run cleans up
    its temporaries as on Ctrl-C. Outside the main thread, a no-op."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    if signal.getsignal(signal.SIGINT) is exit_at_once:  # the command runs: Ctrl-C cleans up
        saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    for s in _CATCH[1:]:
        with suppress(OSError, ValueError):
            saved[s] = signal.signal(s, _raise_terminated)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


__all__ = [
    "MARKER",
    "Terminated",
    "commit_output",
    "discard",
    "interrupts_cleanly",
    "prepare_output",
    "read_marker",
    "release",
    "remove_dead_temporaries",
    "resumable_temporary",
    "write_marker",
]
