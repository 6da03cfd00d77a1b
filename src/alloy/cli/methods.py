"""`alloy methods`: answers from the stored catalog (`alloy.methods.catalog`), without torch."""

from __future__ import annotations

import click

from alloy.cli.common import handle_errors, without_torch


@click.command()
@click.argument("name", required=False)
@handle_errors
@without_torch
def methods(name: str | None) -> None:
    """List merge methods, or describe one: parameters, defaults, base model, paper."""
    from alloy.methods.catalog import method_info
    from alloy.methods.describe import describe_method, list_methods

    click.echo(describe_method(method_info(name)) if name else list_methods())
