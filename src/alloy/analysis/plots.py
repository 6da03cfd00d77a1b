"""PNG plots of the per-layer curves of an analysis (matplotlib, imported only here, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloy.analysis.analyze import Analysis
from alloy.analysis.stats import pairs
from alloy.analysis.tables import letters
from alloy.errors import OutputError


def _series(a: Analysis, key: str, index: int | None) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for layer, sums in a.layers.items():
        v = a.metrics(sums)[key]
        v = v[index] if index is not None else v
        if v is not None:
            xs.append(layer)
            ys.append(v)
    return xs, ys


Series = list[tuple[str, str, int | None]]  # (legend, metric, model or pair index)
PlotSpec = tuple[str, str, str, Series]  # (file stem, y label, title, series)


def _plot_specs(a: Analysis) -> list[PlotSpec]:
    """The per-layer plots of ``a``: task-vector metrics with a base, weight angles without,
    and pairwise cosines for two models or more."""
    names = letters(len(a.models))
    pair_names = [f"{names[i]}·{names[j]}" for i, j in pairs(len(names))]
    plots: list[PlotSpec] = []

    def each(key: str, labels: list[str], suffix: str = "") -> Series:
        return [(label + suffix, key, i) for i, label in enumerate(labels)]

    if a.has_base:
        plots += [
            (
                "relative_norm",
                "|δ| / |W|",
                "task-vector norm relative to the base",
                each("relative_norm", names),
            ),
            (
                "changed",
                "fraction changed",
                "entries the fine-tune changed",
                each("changed", names),
            ),
            (
                "concentration",
                "share of energy",
                "energy in the top 10% (solid) and 50% (dashed) entries",
                each("top10_energy", names, " top10%") + each("top50_energy", names, " top50%"),
            ),
        ]
        if len(names) > 1:
            plots.append(
                (
                    "conflict",
                    "conflict rate",
                    f"sign conflicts among TIES-kept entries (density {a.density:g})",
                    [("all", "conflict", None)],
                )
            )
    else:
        plots.append(
            (
                "angle",
                "degrees",
                "angle between the weights",
                each("angle_deg", pair_names),
            )
        )
    if len(names) > 1:
        plots.append(
            (
                "cosine",
                "cosine",
                "pairwise cosine" + (" of the task vectors" if a.has_base else " of the weights"),
                each("cosine", pair_names),
            )
        )
    return plots


def write_plots(a: Analysis, out_dir: Path) -> list[Path]:
    """One PNG per per-layer metric in ``out_dir`` (created if needed); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the plot directory {out_dir}: {e}") from e
    written = []
    for stem, ylabel, title, series in _plot_specs(a):
        fig, ax = plt.subplots(figsize=(7, 4))
        try:
            for label, key, index in series:
                xs, ys = _series(a, key, index)
                style: dict[str, Any] = {"linestyle": "--"} if "top50" in label else {}
                ax.plot(xs, ys, marker="o", markersize=3, label=label, **style)
            ax.set_xlabel("layer")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            path = out_dir / f"{stem}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            written.append(path)
        finally:
            plt.close(fig)
    return written
