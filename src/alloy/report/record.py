"""The report record (report.json's content) of a merge, built from its plan."""

from __future__ import annotations

from typing import Any

from alloy._version import __version__
from alloy.config.schema import ModelRef
from alloy.plan.planner import MergePlan
from alloy.report.card import resolved_yaml
from alloy.report.rationale import rationale
from alloy.report.report import FORMAT, VERSION


def merged_sources(plan: MergePlan) -> list[ModelRef]:
    """The models whose tensors feed the merge (not a tokenizer-only donor), in config order,
    one per checkpoint directory."""
    used = {r.model for j in plan.jobs for r in j.all_inputs}
    out: list[ModelRef] = []
    paths = set()
    for ref in plan.config.all_models():
        path = plan.models[ref].path
        if ref in used and path not in paths:
            out.append(ref)
            paths.add(path)
    return out


def build_report(
    plan: MergePlan,
    *,
    name: str,
    seed: int | None,
    inventory: list[dict[str, Any]],
    facts: dict[str, Any],
    evaluation: dict[str, Any] | None,
    warnings: list[str],
    run: dict[str, Any],
    recommendation: str | None = None,
) -> dict[str, Any]:
    """The record. ``recommendation``, when a recommendation ran, replaces the method's
    description as the rationale's text; the measured facts are kept either way."""
    why = rationale(plan.method.name, facts, plan.config.merge_method)
    if recommendation is not None:
        why["source"] = "recommendation"
        why["description"] = recommendation
    return {
        "format": FORMAT,
        "version": VERSION,
        "alloy_version": __version__,
        "name": name,
        "merge": {
            "method": plan.method.name,
            "requested_method": plan.config.merge_method,
            "config_yaml": resolved_yaml(plan, seed),
            "models": [
                {"label": str(r), "path": str(plan.models[r].path)} for r in merged_sources(plan)
            ],
            "tensors": len(plan.jobs),
            "bytes_written": plan.bytes_to_write,
        },
        "inventory": inventory,
        "evaluation": evaluation,
        "rationale": why,
        "warnings": warnings,
        "run": run,
    }
