"""Helpers shared by the `alloy` subcommands: logging and error handling."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from alloy.errors import AlloyError
from alloy.io.output import Terminated, interrupts_cleanly

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)


def handle_errors(fn: F) -> F:
    """An `AlloyError` prints as ``error: ...`` and exits 1; Ctrl-C exits 130. Commands that
    write their output atomically (a temporary sibling renamed at the end) set
    ``ATOMIC_OUTPUT`` on the function, and Ctrl-C then says that nothing was written."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with interrupts_cleanly():
                return fn(*args, **kwargs)
        except AlloyError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as e:
            atomic = getattr(fn, "ATOMIC_OUTPUT", False)
            click.echo("interrupted" + ("; nothing was written" if atomic else ""), err=True)
            sys.exit(128 + e.signum if isinstance(e, Terminated) else 130)

    return wrapper  # type: ignore[return-value]


def atomic_output(fn: F) -> F:
    """Mark a command whose output directory appears only when complete (see handle_errors)."""
    fn.ATOMIC_OUTPUT = True  # type: ignore[attr-defined]
    return fn
