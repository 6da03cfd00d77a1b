"""Ctrl-C while the `alloy` command is still starting (importing torch takes seconds) exits
130 with one line, as it does once a command runs, instead of a traceback or a crash inside a
half-imported extension module.

Importing this module (``alloy/__init__.py`` does, before its heavy imports) installs a SIGINT
handler that exits at once, only when the process is the `alloy` command (``alloy ...`` or
``python -m alloy``): nothing has been written at that point. The command itself then turns
SIGINT back into KeyboardInterrupt (`alloy.io.output.interrupts_cleanly`), so that a run cleans
up after itself. A program importing Alloy is untouched.
"""

from __future__ import annotations

import _signal  # the C module: `signal` imports enum, which is slow to import
import os
import sys
from typing import Any


def _is_cli() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    # `python -m alloy` sets argv[0] to "-m" while the package is being imported
    return os.path.basename(argv0) in ("alloy", "alloy.exe") or argv0 == "-m"


def exit_at_once(signum: int, frame: Any) -> None:
    """The startup SIGINT handler: nothing is written yet, so leave now, quietly."""
    os.write(2, b"interrupted\n")
    os._exit(130)


def install() -> None:
    if _is_cli() and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, exit_at_once)


install()
