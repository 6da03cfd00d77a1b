"""The search's outputs: best.yml (a config `alloy merge` runs), the trial table (trials.md,
trials.json), the Pareto plot (pareto.png) and report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alloy.search.run import Measured, SearchState, best, best_yaml, rank_key
from alloy.tabulate import markdown


def _pct(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.1%}"


def _params(m: Measured) -> str:
    if m.config is None:
        return ""
    method = m.config.get("merge_method", "")
    flat: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "parameters" and isinstance(v, dict):
                    flat.extend(
                        f"{where}{n}={v[n]:.3g}"
                        if isinstance(v[n], float)
                        else f"{where}{n}={v[n]}"
                        for n in v
                    )
                elif isinstance(v, dict | list):
                    walk(v, where)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"m{i}.")

    walk(m.config, "")
    return f"{method} " + " ".join(flat)


def rows(state: SearchState) -> list[list[str]]:
    out = []
    ranked = sorted(state.trials, key=rank_key, reverse=True)
    for m in [*state.source_rows, *state.fixed, *ranked]:
        v, t = m.validation, m.test
        cells = [m.label, _params(m) if m.kind != "source" else "(source)"]
        cells += [_pct(v.retention[s]) if v else "" for s in state.skills]
        cells += [_pct(v.min_retention) if v else "", "yes" if v and v.feasible else "no"]
        cells += [_pct(t.retention[s]) if t else "" for s in state.skills]
        cells += [_pct(t.min_retention) if t else "", "yes" if t and t.feasible else ""]
        cells.append(m.error or ("; ".join(v.degraded) if v else ""))
        out.append(cells)
    return out


def header(state: SearchState) -> list[str]:
    val = [f"val {s}" for s in state.skills] + ["val min", "val ok"]
    test = [f"test {s}" for s in state.skills] + ["test min", "test ok"]
    return ["model", "config", *val, *test, "degraded / error"]


def to_json(state: SearchState) -> dict[str, Any]:
    def one(m: Measured) -> dict[str, Any]:
        return {
            "label": m.label,
            "kind": m.kind,
            "number": m.number,
            "config": m.config,
            "validation": m.validation.to_dict() if m.validation else None,
            "test": m.test.to_dict() if m.test else None,
            "error": m.error,
        }

    b = best(state)
    return {
        "reference": state.reference,
        "skills": state.skills,
        "best": b.label if b else None,
        "sources": [one(m) for m in state.source_rows],
        "fixed": [one(m) for m in state.fixed],
        "trials": [one(m) for m in sorted(state.trials, key=lambda m: m.number or 0)],
    }


def _short(label: str) -> str:
    """A plot label: a source's directory name (``base+adapter``: the adapter's)."""
    return Path(label.split("+")[-1]).name if "/" in label else label[:28]


def _panel(ax: Any, state: SearchState, lim: tuple[float, float]) -> None:
    x, y = state.skills[0], state.skills[1]

    def clip(v: float) -> float:
        return min(max(v, lim[0]), lim[1])

    pts = [m.validation for m in state.trials if m.validation]
    ax.scatter(
        [clip(p.retention[x]) for p in pts],
        [clip(p.retention[y]) for p in pts],
        s=14,
        c=["tab:blue" if p.feasible else "silver" for p in pts],
        label="trials (gray: degraded)",
    )
    for m in [*state.source_rows, *state.fixed]:
        if m.validation is None:
            continue
        px, py = m.validation.retention[x], m.validation.retention[y]
        if not (lim[0] <= px <= lim[1] and lim[0] <= py <= lim[1]):
            continue
        src = m.kind == "source"
        ax.scatter(
            [px], [py], marker="s" if src else "^", s=50, c="tab:orange" if src else "tab:green"
        )
        ax.annotate(
            _short(m.label), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    b = best(state)
    if b is not None and b.validation is not None:
        ax.scatter(
            [b.validation.retention[x]],
            [b.validation.retention[y]],
            marker="*",
            s=160,
            c="tab:red",
            label=f"best ({b.label})",
        )
    pad = (lim[1] - lim[0]) * 0.03
    ax.set_xlim(lim[0] - pad, lim[1] + pad)
    ax.set_ylim(lim[0] - pad, lim[1] + pad)
    ax.set_xlabel(f"retention of {x} (validation)")
    ax.set_ylabel(f"retention of {y} (validation)")
    ax.grid(alpha=0.3)


def plot(state: SearchState, path: Path) -> bool:
    """Retention of the first skill against the second: trials, the best, the sources and
    the fixed configs marked (matplotlib, imported here); the whole square (values outside
    it drawn at its edge) and a zoom around the best. False with fewer than two skills."""
    if len(state.skills) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (whole, zoom) = plt.subplots(1, 2, figsize=(11, 5))
    _panel(whole, state, (-0.05, 1.05))
    b = best(state)
    if b is not None and b.validation is not None:
        low = min(b.validation.retention[s] for s in state.skills[:2])
        _panel(zoom, state, (max(low - 0.1, -0.05), 1.02))
        zoom.set_title("around the best", fontsize=9)
    else:
        zoom.set_visible(False)
    whole.legend(fontsize=8, loc="center left")
    fig.suptitle("alloy search: trials, sources (squares), fixed configs (triangles)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(state: SearchState, out: Path) -> list[str]:
    """Write every output into ``out``; the names written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    text = best_yaml(state)
    if text:
        (out / "best.yml").write_text(text, encoding="utf-8")
        written.append("best.yml")
    md = markdown(header(state), rows(state))
    (out / "trials.md").write_text(md + "\n", encoding="utf-8")
    (out / "trials.json").write_text(json.dumps(to_json(state), indent=1) + "\n", encoding="utf-8")
    written += ["trials.md", "trials.json"]
    if plot(state, out / "pareto.png"):
        written.append("pareto.png")
    (out / "report.md").write_text(report(state, md), encoding="utf-8")
    return [*written, "report.md"]


def report(state: SearchState, md: str) -> str:
    b = best(state)
    lines = ["# alloy search", ""]
    lines.append(
        f"Reference (the base): `{state.reference}`. Skills: {', '.join(state.skills)}. "
        f"{len(state.trials)} trials."
    )
    if b is not None and b.validation is not None:
        test = f", test {_pct(b.test.min_retention)}" if b.test else ""
        lines.append(
            f"Best: {b.label} ({_params(b)}): smallest retention validation "
            f"{_pct(b.validation.min_retention)}{test}; the config is in best.yml."
        )
    lines += [
        "",
        "Retention of each skill on the validation split (searched on) and the test "
        "split (held out; measured for the sources, the fixed configs and the best "
        "trials). `ok`: no set more than 10% worse than the best source.",
        "",
        md,
        "",
    ]
    return "\n".join(lines)
