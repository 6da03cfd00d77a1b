"""Helpers shared by the `alloy` subcommands: logging, error handling, and the group that
imports a command's module only when the command runs."""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


def _import_torch() -> None:
    """Import torch while Ctrl-C still exits at once (`alloy._interrupt`; nothing is written
    yet): every command needs it, and an interrupt in the middle of its import can leave it half
    initialised, so that the command went on and failed strangely instead of exiting 130.

    The cyclic garbage collector is off during the import and the objects it made are frozen
    afterwards (`gc.freeze`): after the import it tracks some 166,000 long-lived objects, and
    every full collection after that (several during the later imports of numba and
    matplotlib, and in a merge's loop) traversed them all again: 1.8-3.0 s in a 1.1B merge at
    load 12 (bench/README.md, "Start-up, issue 17")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        import torch  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def handle_errors(fn: F) -> F:
    """An `AlloyError` prints as ``error: ...`` and exits 1; Ctrl-C exits 130. Commands that
    write their output atomically (a temporary sibling renamed at the end) set
    ``ATOMIC_OUTPUT`` on the function, and Ctrl-C then says that nothing was written."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not getattr(fn, "WITHOUT_TORCH", False):
            _import_torch()
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


def without_torch(fn: F) -> F:
    """Mark a command that needs no torch (`alloy methods`): handle_errors does not import it."""
    fn.WITHOUT_TORCH = True  # type: ignore[attr-defined]
    return fn


def atomic_output(fn: F) -> F:
    """Mark a command whose output directory appears only when complete (see handle_errors)."""
    fn.ATOMIC_OUTPUT = True  # type: ignore[attr-defined]
    return fn


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives (``module``, and its ``attribute`` there) and its short help (the
    first sentence of its docstring), so that ``--help`` can list it without importing it."""

    module: str
    attribute: str
    short_help: str

    def short_help_str(self, limit: int) -> str:
        """The short help cut to ``limit`` characters exactly as click cuts a command's."""
        return click.Command(None, help=self.short_help).get_short_help_str(limit)


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use: `alloy --help` and
    `alloy --version` import no command module (and so neither torch nor numba)."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = self.lazy.get(cmd_name)
        if spec is not None and cmd_name not in self.commands:
            command = getattr(importlib.import_module(spec.module), spec.attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{spec.module}.{spec.attribute} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not imported yet shows the short help of its entry."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                if not loaded.hidden:
                    rows.append((name, loaded.get_short_help_str(limit)))
            else:
                rows.append((name, self.lazy[name].short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
