"""Start-up: `alloy --version`, `--help` and `import alloy` import no heavy module; the lazy
command table and the lazy exports match what they stand for.

These tests assert on the modules a fresh interpreter has imported, never on time (the times
are in bench/README.md, measured by bench/startup.py).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import click.testing
import pytest

import alloy
from alloy.cli import COMMANDS, main
from alloy.cli.common import LazyGroup

SRC = Path(alloy.__file__).resolve().parent.parent
HEAVY = ("torch", "numba", "matplotlib", "transformers", "safetensors")

# Runs a snippet, then prints (to stdout, as JSON) which HEAVY modules it imported, even when
# the snippet ends in sys.exit (a click command always does).
PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules))))
{code}
"""


def imported_heavy(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The ``heavy`` modules a fresh interpreter has imported after running ``code``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=heavy, code=code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return modules


def cli(*args: str) -> str:
    return f"import sys\nsys.argv = ['alloy', *{list(args)!r}]\nfrom alloy.cli import main\nmain()"


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("-h",), ("merge", "--help")])
def test_cli_answers_without_heavy_imports(args: tuple[str, ...]) -> None:
    assert imported_heavy(cli(*args)) == []


def test_import_alloy_imports_nothing_heavy() -> None:
    assert imported_heavy("import alloy\nfrom alloy import AlloyError, __version__") == []


@pytest.mark.parametrize("args", [("methods",), ("methods", "ties")])
def test_methods_answers_without_heavy_imports(args: tuple[str, ...]) -> None:
    # `alloy methods` reads the stored catalog (alloy.methods.catalog), not the registry of
    # torch functions; tests/methods/test_catalog.py checks the two agree.
    assert imported_heavy(cli(*args)) == []


def test_methods_does_not_load_the_registry() -> None:
    loaded = imported_heavy(cli("methods", "slerp"), ("alloy.methods.registry", "pydantic"))
    assert loaded == []


def test_kernel_check_does_not_import_numba() -> None:
    code = "from alloy.kernels import cpu_kernels_enabled\nassert cpu_kernels_enabled()"
    assert "numba" not in imported_heavy(code)


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alloy", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=120,
        check=True,
    )
    listed = result.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_table_matches_the_command(name: str) -> None:
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.attribute)
    assert isinstance(command, click.Command)
    assert command.name == name
    assert not command.hidden
    for limit in (30, 45, 80, 10_000):
        assert entry.short_help_str(limit) == command.get_short_help_str(limit), (name, limit)


def test_lazy_help_is_the_eager_help() -> None:
    """A fresh lazy group's help (no command imported) equals that of a group holding every
    command, as click formats it."""
    ctx = click.Context(main)
    commands = {name: main.get_command(ctx, name) for name in COMMANDS}
    common: dict[str, Any] = {
        "params": main.params,
        "help": main.help,
        "context_settings": main.context_settings,
    }
    lazy = LazyGroup("alloy", lazy=COMMANDS, **common)
    eager = click.Group("alloy", commands={n: c for n, c in commands.items() if c}, **common)
    runner = click.testing.CliRunner()
    lazy_help = runner.invoke(lazy, ["--help"], prog_name="alloy")
    assert lazy.commands == {}  # nothing was imported to print it
    eager_help = runner.invoke(eager, ["--help"], prog_name="alloy")
    assert lazy_help.exit_code == eager_help.exit_code == 0
    assert "Commands:" in lazy_help.output
    assert lazy_help.output == eager_help.output


def test_every_export_resolves() -> None:
    for name in alloy.__all__:
        value = getattr(alloy, name)
        assert value is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(alloy, "no_such_name")  # noqa: B009 (mypy rejects the attribute)


def test_plan_is_the_function_even_after_the_subpackage_is_imported() -> None:
    code = (
        "import alloy\nimport alloy.plan.executor\nfrom alloy import plan\n"
        "from alloy.api import plan as api_plan\nassert plan is api_plan is alloy.plan\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=120,
        check=True,
    )


def test_lazy_table_matches_the_type_checking_imports() -> None:
    """mypy sees the names through the TYPE_CHECKING imports; `__getattr__` loads them from
    ``_LAZY``: the two must agree, and with ``__all__``."""
    tree = ast.parse(Path(alloy.__file__).read_text())
    guarded = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
    )
    declared = {
        alias.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert declared == alloy._LAZY
    eager = {n for n in alloy.__all__ if n not in alloy._LAZY}
    for name in eager:  # only the version and the error tree are imported eagerly
        assert name == "__version__" or getattr(alloy, name) is getattr(alloy.errors, name)
    assert set(alloy._LAZY) <= set(alloy.__all__)
    for name, module in alloy._LAZY.items():
        assert getattr(alloy, name) is getattr(importlib.import_module(module), name)


def test_the_report_plot_is_drawn_without_pyplot(tmp_path: Path) -> None:
    png = tmp_path / "layers.png"
    facts = {
        "measure": "m",
        "with_base": True,
        "layers": {"labels": ["0", "1"], "m": {"a": [1, 2]}},
    }
    code = (
        f"from alloy.report.plots import layers_plot\nassert layers_plot({facts!r}, {str(png)!r})"
    )
    assert imported_heavy(code, ("matplotlib.pyplot", "matplotlib")) == ["matplotlib"]
    assert png.read_bytes().startswith(b"\x89PNG")


def test_torch_is_imported_with_the_collector_off_and_frozen_after() -> None:
    code = (
        "import gc\nfrom alloy.cli.common import _import_torch\n_import_torch()\n"
        "assert gc.isenabled() and gc.get_freeze_count() > 100_000, gc.get_freeze_count()\n"
    )
    assert imported_heavy(code, ("torch",)) == ["torch"]


def test_a_merge_of_small_tensors_does_not_import_numba(tmp_path: Path) -> None:
    """Below `alloy.kernels.KERNEL_MIN` elements the merge, its finiteness check and the
    report's sums go through torch: numba's import and kernel loading cost a tiny merge
    about 0.8 s (examples/linear.yml on the example models)."""
    subprocess.run(
        [
            sys.executable,
            str(SRC.parent / "examples" / "make_tiny_models.py"),
            str(tmp_path / "tiny"),
        ],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=True,
        capture_output=True,
    )
    cfg = tmp_path / "linear.yml"
    cfg.write_text((SRC.parent / "examples" / "linear.yml").read_text())
    code = cli("merge", str(cfg), str(tmp_path / "out"), "-q")
    assert imported_heavy(code, ("torch", "numba")) == ["torch"]
    assert (tmp_path / "out" / "model.safetensors").exists()
