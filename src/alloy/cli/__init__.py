"""`alloy`: the command line. Thin: every command calls the public API.

One module per command family; each defines click commands. ``main`` knows each command's
module and short help (``COMMANDS``) and imports the module only when the command runs, so
``alloy --help`` and ``alloy --version`` answer without importing torch (tests/test_startup.py
checks both the modules and that every entry matches its command).
Errors derived from `AlloyError` print as ``error: ...`` and exit 1.
"""

from __future__ import annotations

import click

from alloy._version import __version__
from alloy.cli.common import LazyCommand, LazyGroup

COMMANDS: dict[str, LazyCommand] = {
    "merge": LazyCommand(
        "alloy.cli.merge",
        "merge",
        "Merge the models of CONFIG (mergekit YAML) into the directory OUT.",
    ),
    "plan": LazyCommand(
        "alloy.cli.merge",
        "plan",
        "Show what merging CONFIG will read, write and need in memory (reads headers only).",
    ),
    "methods": LazyCommand(
        "alloy.cli.methods",
        "methods",
        "List merge methods, or describe one: parameters, defaults, base model, paper.",
    ),
    "check": LazyCommand("alloy.cli.check", "check", "Compare MODEL..."),
    "inventory": LazyCommand(
        "alloy.cli.check",
        "inventory",
        "Describe each MODEL (or the models of a merge CONFIG): origin, declared base, "
        "parameters, dtypes, architecture hash, content hash, domain.",
    ),
    "analyze": LazyCommand(
        "alloy.cli.analyze",
        "analyze",
        "Statistics of the task vectors of MODEL... against --base (or, without a base, of the "
        "weights): norms, cosines, sign conflicts, fraction changed, concentration; per tensor, "
        "per layer, per module kind.",
    ),
    "recommend": LazyCommand(
        "alloy.cli.analyze",
        "recommend",
        "Recommend a merge method and its parameters for MODEL...",
    ),
    "eval": LazyCommand(
        "alloy.cli.eval",
        "eval_",
        "Evaluate MERGED against its SOURCES: alloy eval MERGED [SOURCE...].",
    ),
    "report": LazyCommand(
        "alloy.cli.eval",
        "report",
        "Render OUT's merge report again from OUT/report.json: report.md, report.html (one "
        "self-contained page), the PNG plots and the model card's evaluation table.",
    ),
    "lora": LazyCommand(
        "alloy.cli.lora",
        "lora",
        "LoRA adapters: merge several into one, or extract one from a fine-tune.",
    ),
    "demo": LazyCommand(
        "alloy.cli.demo",
        "demo",
        "Train a tiny Llama base and two specialists (an encouraging task-manager persona and a "
        "tool caller), as full fine-tunes and LoRA adapters; check, analyze and recommend; merge "
        "them with the recommended method and the alternatives; evaluate every model on "
        "held-out data and write a report.",
    ),
    "convert": LazyCommand(
        "alloy.cli.convert",
        "convert",
        "Convert SRC to DST: a .gguf file (or a directory holding one) becomes the Hugging Face "
        "directory DST; a Hugging Face directory becomes the GGUF file DST.",
    ),
    "search": LazyCommand(
        "alloy.cli.search",
        "search",
        "Search CONFIG's ranges and choices for the merge that keeps the most of each skill; "
        "write best.yml, trials.md, trials.json, pareto.png and report.md into OUT.",
    ),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alloy")
def main() -> None:
    """Merge fine-tuned checkpoints of one base model into one model, without training.

    Configs are mergekit YAML files: `alloy merge config.yml ./merged`.
    """


__all__ = ["COMMANDS", "main"]
