"""The merge report's section "Distance from the Base", from report.json's ``distance``."""

from __future__ import annotations

from typing import Any

from alloy.report.blocks import Block, Heading, Para, Table


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def distance_blocks(distance: dict[str, Any] | None) -> list[Block]:
    """The heading, what was measured, and two tables: overall (with each model's farthest
    layer) and per layer."""
    blocks: list[Block] = [Heading("Distance from the Base")]
    if not distance:
        blocks.append(
            Para(
                "Not measured: the merge has no base model (its method takes none), so there "
                "is no base to measure from."
            )
        )
        return blocks
    rows = [("merged", distance["merged"])] + [(s["model"], s) for s in distance["sources"]]
    blocks.append(
        Para(
            f"Relative L2 distance from `{distance.get('base') or 'the base'}`, "
            "‖W − W_base‖ / ‖W_base‖, over the "
            f"{distance.get('tensors', '?')} merged tensors that have a base, measured exactly "
            "on the merged tensors as they were written (in the output dtype) and on the "
            "sources' tensors the merge read. " + _verdict(distance)
        )
    )
    table = []
    for name, d in rows:
        layers = {k: v for k, v in d["layers"].items() if v is not None}
        top = max(layers, key=lambda k: layers[k]) if layers else None
        far = f"{top}: {_pct(layers[top])}" if top is not None else "—"
        table.append([name, _pct(d.get("overall")), far])
    blocks.append(Table(["model", "distance", "farthest layer"], table, {1}))
    labels = list(distance["merged"]["layers"])
    if len(labels) > 1:
        head = ["layer", *(name for name, _ in rows)]
        body = [[lay, *(_pct(d["layers"].get(lay)) for _, d in rows)] for lay in labels]
        blocks.append(Table(head, body, set(range(1, len(head)))))
    return blocks


def _verdict(distance: dict[str, Any]) -> str:
    ratio, threshold = distance.get("ratio"), distance.get("threshold")
    if ratio is None or threshold is None:
        return ""
    if distance.get("warning"):
        return (
            f"The merge moved {ratio:.2f} times as far as the farthest source (the warning "
            f"starts above {threshold:.2f} times for {len(distance['sources'])} sources; see "
            "Warnings and Notes)."
        )
    return (
        f"The merge moved {ratio:.2f} times as far as the farthest source (a warning starts "
        f"above {threshold:.2f} times for {len(distance['sources'])} sources)."
    )
