"""`alloy check` and `alloy inventory`."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Any

import click

from alloy.cli.common import F, setup_logging
from alloy.errors import AlloyError, IncompatibleModelsError


def exit_codes(fn: F) -> F:
    """0 success, 1 when the models cannot be merged, 2 on a usage or I/O error."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IncompatibleModelsError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except AlloyError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def is_config(args: tuple[str, ...]) -> bool:
    return len(args) == 1 and Path(args[0]).is_file() and Path(args[0]).suffix.lower() != ".gguf"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--allow-crimes",
    is_flag=True,
    help="Count architecture differences whose tensors still line up as mergeable.",
)
@click.option("-v", "--verbose", count=True)
@exit_codes
def check(models: tuple[str, ...], as_json: bool, allow_crimes: bool, verbose: int) -> None:
    """Compare MODEL... (two or more), or the models of a merge CONFIG: config.json's
    architecture fields, tensor names and shapes, tokenizers.

    Exit status: 0 mergeable, 1 not mergeable, 2 usage or I/O error.
    """
    from alloy.api import check as run

    setup_logging(verbose, verbose == 0)
    report = run(Path(models[0]) if is_config(models) else list(models))
    if as_json:
        echo_json(report.to_dict(allow_crimes))
    else:
        click.echo(report.render(allow_crimes))
    sys.exit(0 if report.mergeable(allow_crimes) else 1)


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="The domain of a model, in the order of MODEL... (repeat: --label chat --label code).",
)
@click.option(
    "--hash/--no-hash",
    "hash_weights",
    default=True,
    show_default=True,
    help="Compute the content hash of the weights (reads every byte).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@exit_codes
def inventory(
    models: tuple[str, ...], labels: tuple[str, ...], hash_weights: bool, as_json: bool
) -> None:
    """Describe each MODEL (or the models of a merge CONFIG): origin, declared base,
    parameters, dtypes, architecture hash, content hash, domain."""
    from alloy.analysis.inventory import render
    from alloy.api import inventory as run

    source = Path(models[0]) if is_config(models) else list(models)
    records = run(source, hash_weights=hash_weights, labels=list(labels))
    if as_json:
        echo_json([r.to_dict() for r in records])
    else:
        click.echo(render(records))
