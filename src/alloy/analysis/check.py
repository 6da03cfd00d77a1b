"""`alloy check`: the compatibility report for a list of models or for a merge config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alloy.analysis.inventory import parse_refs
from alloy.arch.compat import check_models
from alloy.arch.differences import CompatReport
from alloy.config.load import load_config
from alloy.config.schema import ModelRef
from alloy.errors import IncompatibleModelsError, UsageError
from alloy.plan.models import close_all, open_all, open_models_of
from alloy.plan.planner import build_plan


def check(models: Sequence[str | ModelRef], *, config_dir: Path | None = None) -> CompatReport:
    """Compare whole checkpoints: every architecture field, tensor and tokenizer part. The
    first model is the reference; reads headers, configs and tokenizer files only."""
    if len(models) < 2:
        raise UsageError("give at least two models to compare (or one merge config)")
    refs = parse_refs(models)
    opened = open_all(refs, config_dir)
    try:
        return check_models([opened[r] for r in refs], [str(r) for r in refs])
    finally:
        close_all(opened)


def check_config(config: str | Path) -> CompatReport:
    """The check that `alloy merge CONFIG` runs before writing: the models taking part, with
    the config's layout (``slices:`` may combine models of different depths)."""
    try:
        cfg = load_config(config)
        with open_models_of(cfg) as models:
            the_plan = build_plan(cfg, models, allow_crimes=True)
    except IncompatibleModelsError as e:
        if isinstance(e.report, CompatReport):
            return e.report
        raise
    assert the_plan.compat is not None
    return the_plan.compat
