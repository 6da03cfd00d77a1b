"""The Source Model Inventory of the report: plain records (dicts), rendered as a table.

The report renders whatever fields the records hold (columns in order of first appearance),
so a richer inventory (architecture and content hashes, declared base, domain) drops in by
passing its records instead of `inventory_from_plan`'s.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from alloy.config.schema import ModelRef
from alloy.plan.planner import MergePlan
from alloy.report.blocks import Table


def _roles(plan: MergePlan) -> dict[ModelRef, str]:
    cfg = plan.config
    bases = {cfg.base_model} | {s.base_model for s in cfg.slices or ()}
    inputs = {s.model for s in cfg.models or ()} | {
        src.model for s in cfg.slices or () for src in s.sources
    }
    roles = {}
    for ref in cfg.all_models():
        roles[ref] = "base" if ref in bases else "input" if ref in inputs else "tokenizer"
    return roles


def inventory_from_plan(plan: MergePlan) -> list[dict[str, Any]]:
    """What the plan knows for free about each input: reference, role, resolved path,
    architecture, parameter count and dtypes from the checkpoint headers."""
    records = []
    roles = _roles(plan)
    for ref in plan.config.all_models():
        m = plan.models[ref]
        infos = [m.weights.info(n) for n in m.weights.names()]
        dtypes = Counter(str(i.dtype).removeprefix("torch.") for i in infos)
        arch = m.config.get("architectures") or [m.config.get("model_type", "unknown")]
        records.append(
            {
                "reference": str(ref),
                "role": roles[ref],
                "path": str(m.path),
                "architecture": arch[0] if isinstance(arch, list) and arch else str(arch),
                "parameters": sum(i.numel for i in infos if i.dtype.is_floating_point),
                "tensors": len(infos),
                "dtypes": dict(dtypes.most_common()),
            }
        )
    return records


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
