"""The report record (report.json's content) of a merge, built from its `MergeRecord`."""

from __future__ import annotations

from typing import Any

from alloy._version import __version__
from alloy.report.card import resolved_yaml
from alloy.report.inventory import report_inventory
from alloy.report.merge_record import MergeRecord
from alloy.report.rationale import rationale
from alloy.report.report import FORMAT, VERSION


def build_report(record: MergeRecord, *, recommendation: str | None = None) -> dict[str, Any]:
    """The record. ``recommendation``, when a recommendation ran, replaces the method's
    description as the rationale's text; the measured facts are kept either way."""
    summary = record.summary
    why = rationale(summary.method, dict(record.facts), summary.config.merge_method)
    if recommendation is not None:
        why["source"] = "recommendation"
        why["description"] = recommendation
    out: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "alloy_version": __version__,
        "name": summary.name,
        "merge": {
            "method": summary.method,
            "requested_method": summary.config.merge_method,
            "config_yaml": resolved_yaml(summary),
            "models": [{"label": str(m.ref), "path": str(m.path)} for m in summary.merged_models()],
            "tensors": summary.tensors,
            "bytes_written": summary.bytes_written,
        },
        "inventory": report_inventory(summary.config, record.sources),
        "evaluation": dict(record.evaluation) if record.evaluation is not None else None,
        "rationale": why,
        "distance": dict(record.distance) if record.distance is not None else None,
        "warnings": [*record.warnings, *_distance_warning(record)],
        "run": record.run.to_dict(),
    }
    if summary.vocabulary is not None:  # an aligned vocabulary: where each token's rows came from
        out["tokenizer"] = dict(summary.vocabulary)
    return out


def _distance_warning(record: MergeRecord) -> list[str]:
    warning = (record.distance or {}).get("warning")
    return [f"distance from the base: {warning}"] if warning else []
