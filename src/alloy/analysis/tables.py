"""The text tables of `alloy analyze`: whole model, per module kind, per layer."""

from __future__ import annotations

from string import ascii_uppercase
from typing import Any

from alloy.analysis.analyze import POST, PRE, Analysis
from alloy.analysis.stats import Sums, pairs
from alloy.tabulate import aligned, percent


def letters(n: int) -> list[str]:
    """Short names of the models in tables: A, B, C, ... (AA, AB, ... beyond 26)."""
    out = []
    for i in range(n):
        out.append(
            ascii_uppercase[i] if i < 26 else ascii_uppercase[i // 26 - 1] + ascii_uppercase[i % 26]
        )
    return out


def _num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _columns(a: Analysis) -> list[tuple[str, Any]]:
    """(title, function of the metrics dict) for each column."""
    names = letters(len(a.models))
    cols: list[tuple[str, Any]] = []
    if a.has_base:
        cols += [
            (f"|δ|/|W| {x}", lambda m, i=i: _num(m["relative_norm"][i]))
            for i, x in enumerate(names)
        ]
    else:
        cols += [(f"|W| {x}", lambda m, i=i: _num(m["norm"][i], 2)) for i, x in enumerate(names)]
    for p, (i, j) in enumerate(pairs(len(names))):
        pair = f"{names[i]}·{names[j]}"
        cols.append((f"cos {pair}", lambda m, p=p: _num(m["cosine"][p])))
        if not a.has_base:
            cols.append((f"angle {pair}", lambda m, p=p: _num(m["angle_deg"][p], 2) + "°"))
    if a.has_base:
        if len(names) > 1:
            cols.append((f"conflict@{a.density:g}", lambda m: percent(m["conflict"])))
        cols += [
            (f"changed {x}", lambda m, i=i: percent(m["changed"][i])) for i, x in enumerate(names)
        ]
        cols += [
            (f"top10% {x}", lambda m, i=i: percent(m["top10_energy"][i]))
            for i, x in enumerate(names)
        ]
        cols += [
            (f"top50% {x}", lambda m, i=i: percent(m["top50_energy"][i]))
            for i, x in enumerate(names)
        ]
    return cols


def _table(title: str, rows: list[tuple[str, Sums]], a: Analysis) -> list[str]:
    cols = _columns(a)
    head = [title, *(c for c, _ in cols)]
    body = []
    for name, sums in rows:
        m = a.metrics(sums)
        body.append([name, *(fn(m) for _, fn in cols)])
    return aligned([head, *body], right=range(1, len(head)), indent="  ")


def group_name(g: int | str) -> str:
    return {PRE: "embeddings (before the layers)", POST: "after the layers"}.get(str(g), str(g))


def distance_lines(a: Analysis) -> list[str]:
    """Each source's distance from the base, overall and at its farthest layer."""
    from alloy.analysis.distance import source_distances

    parts = []
    for x, d in zip(letters(len(a.models)), source_distances(a)):
        layers = {k: v for k, v in d["layers"].items() if v is not None}
        far = max(layers, key=lambda k: layers[k]) if layers else None
        label = (f"layer {far}" if far.isdigit() else group_name(far)) if far else ""
        where = f" (farthest: {label}, {percent(layers[far])})" if far else ""
        parts.append(f"{x} {percent(d['overall'])}{where}")
    return [
        "distance from the base (relative L2, |W_i - W_base| / |W_base|: the |δ|/|W| columns):",
        "  " + "; ".join(parts),
    ]


def render(a: Analysis, per_tensor: bool = False) -> str:
    names = letters(len(a.models))
    mode = f"sampled: {a.sample:g} of the rows, seed {a.seed}" if a.sample else "exact: every entry"
    what = (
        "task vectors (fine-tune minus base)"
        if a.has_base
        else "weights (no base: SLERP's geometry)"
    )
    lines = [f"{what} of {len(a.models)} models; {mode}; {a.seconds:.1f} s"]
    if a.base is not None:
        lines.append(f"  base = {a.base}")
    lines += [f"  {x} = {m}" for x, m in zip(names, a.models)]
    t = a.total
    lines += ["", f"whole model ({t.tensors} tensors, {t.numel:,.0f} entries):"]
    lines += _table("", [("all", t)], a)
    if a.has_base:
        lines += ["", *distance_lines(a)]
    lines += ["", "per module kind:"]
    lines += _table("kind", list(a.kinds.items()), a)
    lines += ["", "per layer:"]
    lines += _table("layer", [(group_name(g), s) for g, s in a.groups.items()], a)
    if per_tensor:
        lines += ["", "per tensor:"]
        lines += _table("tensor", [(x.name, x.sums) for x in a.tensors], a)
    if a.has_base and len(a.models) > 1:
        lines += [
            "",
            f"conflict@{a.density:g}: of the entries that TIES at density {a.density:g} keeps in two "
            "or more task vectors, the share whose signs disagree.",
            "top10%/top50%: the share of each task vector's energy (Σ δ²) in its 10% / 50% "
            "largest entries, per tensor.",
        ]
    notes = a.compat.at("crime") + a.compat.at("note")
    if notes:
        lines += ["", "compatibility notes (alloy check):"]
        lines += [f"  - {d.kind} {d.key}: {' / '.join(v or '-' for v in d.values)}" for d in notes]
    return "\n".join(lines)
