"""PNG figures for the report, with matplotlib's Agg backend (imported only when drawing)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alloy.evaluate.compare import ratio

EVAL_PNG = "report-evaluation.png"
LAYERS_PNG = "report-task-vectors.png"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure and its axes without pyplot (whose import, about 0.2 s, a merge's one plot
    does not need): Agg draws it when it is saved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def save_figure(fig: Any, path: Path) -> None:
    # no software/date metadata: the same report gives the same bytes
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})


def evaluation_plot(evaluation: dict[str, Any], path: Path) -> bool:
    """Grouped bars: each model's value relative to the best source (the ratio's definition,
    > 1 is worse), per set and metric, with the 1.10 and 2x thresholds. False if nothing to draw."""
    rows = [r for r in evaluation["rows"] if r.get("best_source")]
    if not rows:
        return False
    labels = list(rows[0]["values"])
    fig, ax = figure((max(5.0, 1.3 * len(rows) + 2), 3.6))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        xs, ys = [], []
        for i, r in enumerate(rows):
            best, v = r["values"][r["best_source"]], r["values"].get(label)
            rel = None if v is None or best is None else ratio(v, best, r["direction"])
            if rel is None:
                continue
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(min(rel, 3.0))  # inf (a zero score): drawn at the cap
        merged = label == rows[0]["merged"]
        ax.bar(
            xs,
            ys,
            width,
            label=label + (" (merged)" if merged else ""),
            color="#d9480f" if merged else None,
            alpha=1.0 if merged else 0.55,
        )
    ax.axhline(1.0, color="#333", lw=0.8)
    ax.axhline(1.10, color="#e8a33d", ls="--", lw=1, label="degraded (> 1.10)")
    ax.axhline(2.0, color="#c92a2a", ls="--", lw=1, label="failed (> 2)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['set']}\n{r['metric']}" for r in rows], fontsize=8)
    ax.set_ylabel("times worse than the best source")
    ax.set_ylim(0, 3.1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Merged model vs. sources (lower is better; capped at 3)", fontsize=10)
    save_figure(fig, path)
    return True


def layers_plot(facts: dict[str, Any], path: Path) -> bool:
    """Per-layer relative task-vector norm of each input. False if there are no layers."""
    layers = facts.get("layers", {})
    labels = [s for s in layers.get("labels", []) if s.isdigit()]
    series = layers.get(facts.get("measure", ""), {})
    if len(labels) < 2 or not series:
        return False
    idx = [layers["labels"].index(s) for s in labels]
    fig, ax = figure((6.0, 3.2))
    for model, values in series.items():
        ys = [values[i] if values[i] is not None else math.nan for i in idx]
        ax.plot([int(s) for s in labels], [100 * y for y in ys], marker="o", ms=3, label=model)
    what = "||task vector|| / ||base||" if facts.get("with_base") else "||x - mean|| / ||mean||"
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"{what} (%)")
    ax.legend(fontsize=7)
    ax.set_title("Task-vector size per layer", fontsize=10)
    save_figure(fig, path)
    return True
