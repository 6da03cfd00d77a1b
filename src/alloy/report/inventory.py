"""The Source Model Inventory of the report: plain records (dicts), rendered as a table.

The report renders whatever fields the records hold (columns in order of first appearance),
so the columns follow the source inventory's records (`alloy.analysis.inventory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alloy.analysis.inventory import SourceRecord
from alloy.config.schema import MergeConfig, ModelRef
from alloy.report.blocks import Table


def _roles(cfg: MergeConfig) -> dict[ModelRef, str]:
    bases = {cfg.base_model} | {s.base_model for s in cfg.slices or ()}
    inputs = {s.model for s in cfg.models or ()} | {
        src.model for s in cfg.slices or () for src in s.sources
    }
    roles = {}
    for ref in cfg.all_models():
        roles[ref] = "base" if ref in bases else "input" if ref in inputs else "tokenizer"
    return roles


def report_inventory(config: MergeConfig, records: Sequence[SourceRecord]) -> list[dict[str, Any]]:
    """The report's rows from the source inventory (`alloy.analysis.inventory`, one record per
    model in config order): reference, role, path, architecture, size, dtypes, hashes, the base
    each model declares and its domain."""
    roles = _roles(config)
    rows = []
    for ref, r in zip(config.all_models(), records, strict=True):
        rows.append(
            {
                "reference": str(ref),
                "role": roles[ref],
                "path": r.path,
                "architecture": r.architectures[0] if r.architectures else r.model_type,
                "parameters": r.parameters,
                "tensors": r.tensors,
                "dtypes": r.dtypes,
                "architecture hash": r.architecture_hash[:12],
                "declared base": r.declared_base,
                "domain": r.domain,
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def inventory_table(records: list[dict[str, Any]]) -> Table:
    columns: dict[str, None] = {}
    for r in records:
        columns.update(dict.fromkeys(r))
    keys = list(columns)
    right = {
        i for i, k in enumerate(keys) if all(isinstance(r.get(k), int | float) for r in records)
    }
    return Table(
        [k.replace("_", " ") for k in keys],
        [[_cell(r.get(k)) for k in keys] for r in records],
        right,
    )
