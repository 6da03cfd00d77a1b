"""`alloy`: the command line. Thin: every command calls the public API.

One module per command family; each defines click commands that are registered on ``main`` here.
Errors derived from `AlloyError` print as ``error: ...`` and exit 1.
"""

from __future__ import annotations

import click

from alloy._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alloy")
def main() -> None:
    """Merge fine-tuned checkpoints of one base model into one model, without training.

    Configs are mergekit YAML files: `alloy merge config.yml ./merged`.
    """


def _register() -> None:
    from alloy.cli import analyze, check, convert, demo, eval, lora, merge, search

    for cmd in (
        merge.merge,
        merge.plan,
        merge.methods,
        check.check,
        check.inventory,
        analyze.analyze,
        analyze.recommend,
        eval.eval_,
        eval.report,
        lora.lora,
        demo.demo,
        convert.convert,
        search.search,
    ):
        main.add_command(cmd)


_register()

__all__ = ["main"]
