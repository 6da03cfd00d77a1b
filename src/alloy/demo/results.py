"""The demo's results: skill retention per merge, the comparison table, report and plot.

Skill retention of a merge on a skill's held-out perplexity::

    retention = (base - merged) / (base - specialist)

1 keeps all of the specialist's gain over the base, 0 keeps none, below 0 is worse than the
base. It is undefined (None) when the specialist did not beat the base.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alloy.evaluate.compare import retention
from alloy.report.blocks import Block, Bullets, Heading, Image, Para, Table, to_html, to_markdown
from alloy.tabulate import percent

SKILLS = ("persona", "tools")
TARGET = 0.8  # the share of each specialist's gain a merge should keep
EPS = 1e-9  # float rounding: (4 - 1.6) / 3 is 0.8
RETENTION_PNG = "retention.png"
FAMILY_NAMES = {"full": "full fine-tunes", "lora": "LoRA adapters"}
# (set, metric) of the probe columns, and their headers
PROBE_COLUMNS = (
    (("persona_probes", "phrases"), "phrases"),
    (("tools_probes", "json"), "json"),
    (("tools_probes", "name"), "name"),
    (("tools_probes", "exact"), "exact"),
)


@dataclass
class ModelResult:
    """One evaluated model of the demo."""

    label: str  # e.g. "full: ties"
    family: str  # "full" (full fine-tunes), "lora" (adapters); "" for the base
    role: str  # "base", "specialist" or "merge"
    name: str  # base, persona, tools, or the merge method
    path: str
    values: dict[str, float] = field(default_factory=dict)  # "set/metric" -> value
    retention: dict[str, float | None] = field(default_factory=dict)  # skill -> retention
    recommended: bool = False

    def value(self, set_name: str, metric: str) -> float:
        return self.values.get(f"{set_name}/{metric}", math.nan)

    def perplexity(self, set_name: str) -> float:
        return self.value(set_name, "perplexity")

    @property
    def display(self) -> str:
        """The row label: ``full-recommended (slerp)`` for a recommended merge."""
        return f"{self.label} ({self.name})" if self.recommended else self.label

    @property
    def keeps_both(self) -> bool:
        return all((r := self.retention.get(s)) is not None and r >= TARGET - EPS for s in SKILLS)


def fill_retention(results: list[ModelResult]) -> None:
    """Set each merge's retention against its family's base and specialists."""
    by = {(r.family, r.name): r for r in results if r.role == "specialist"}
    base = next((r for r in results if r.role == "base"), None)
    for r in results:
        if r.role != "merge":
            continue
        for skill in SKILLS:
            spec = by.get((r.family, skill))
            if base is None or spec is None:
                r.retention[skill] = None
                continue
            r.retention[skill] = retention(
                base.perplexity(skill), r.perplexity(skill), spec.perplexity(skill), "lower"
            )


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    """Whole percents, rounded down: 79.6% shows as 79%, below the 80% target it misses."""
    return percent(v, 0, floor=True)


def comparison_table(results: list[ModelResult]) -> Table:
    headers = ["model", "general ppl", "persona ppl", "tools ppl", "keeps persona", "keeps tools"]
    headers += [h for _, h in PROBE_COLUMNS]
    rows = []
    for r in results:
        row = [r.display] + [_num(r.perplexity(s)) for s in ("general", *SKILLS)]
        row += [_pct(r.retention.get(s)) if r.role == "merge" else "" for s in SKILLS]
        row += [_num(r.value(*key)) for key, _ in PROBE_COLUMNS]
        rows.append(row)
    return Table(headers, rows, right=set(range(1, len(headers))))


def retention_plot(results: list[ModelResult], path: Path) -> bool:
    """Bars of each merge's retention per skill, with the 80% target. False if no merge."""
    merges = [r for r in results if r.role == "merge"]
    if not merges:
        return False
    from alloy.report.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(merges) + 2), 3.8))
    width = 0.38
    for k, skill in enumerate(SKILLS):
        ys = [max(-0.5, min(1.5, m.retention.get(skill) or 0.0)) for m in merges]
        xs = [i - width / 2 + k * width for i in range(len(merges))]
        ax.bar(xs, ys, width, label=f"{skill} skill kept", color=("#5c7cfa", "#f08c00")[k])
    ax.axhline(TARGET, color="#2b8a3e", ls="--", lw=1, label=f"target {TARGET:.0%}")
    ax.axhline(0.0, color="#333", lw=0.8)
    ax.set_xticks(range(len(merges)))
    ax.set_xticklabels(
        [m.label + (" *" if m.recommended else "") for m in merges],
        rotation=45,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("(base - merged) / (base - specialist)")
    ax.set_ylim(-0.5, 1.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Skill retention on held-out perplexity", fontsize=10)
    save_figure(fig, path)
    plt.close(fig)
    return True


def _short(r: ModelResult) -> str:
    return f"recommended {r.name}" if r.recommended else r.name


def verdicts(results: list[ModelResult]) -> list[str]:
    """One sentence per family: which merges keep >= 80% of both skills, which do not."""
    out = []
    for family in sorted({r.family for r in results if r.role == "merge"}):
        merges = [r for r in results if r.role == "merge" and r.family == family]
        keep = [_short(r) for r in merges if r.keeps_both]
        miss = [_short(r) for r in merges if not r.keeps_both]
        rec = next((r for r in merges if r.recommended), None)
        line = f"{family}: keep >= {TARGET:.0%} of both skills: {', '.join(keep) or 'none'}"
        line += f"; below: {', '.join(miss) or 'none'}."
        if rec is not None:
            word = "meets" if rec.keeps_both else "misses"
            line += f" The recommended {rec.name} {word} the target."
        out.append(line)
    return out


def write_report(
    out: Path,
    results: list[ModelResult],
    notes: list[str],
    info: dict[str, Any],
    advice: dict[str, dict[str, Any]],
) -> list[str]:
    """report.json, report.md, report.html and retention.png in ``out``."""
    images = {RETENTION_PNG} if retention_plot(results, out / RETENTION_PNG) else set()
    record = {
        "info": info,
        "advice": advice,
        "notes": notes,
        "models": [asdict(r) for r in results],
    }
    (out / "report.json").write_text(
        json.dumps(record, indent=2, allow_nan=True) + "\n", encoding="utf-8"
    )
    blocks: list[Block] = [
        Heading("Alloy demo: two specialists merged into one model", 1),
        Para(
            "A tiny Llama base, a persona specialist and a tool-calling specialist (as full "
            "fine-tunes and as LoRA adapters), merged with every method; each model measured "
            "on the held-out sets. `keeps` = (base - merged) / (base - specialist) on that "
            "skill's perplexity; `phrases` = persona signature phrases produced; `json` and "
            "`name`, `exact` = tool calls that parse, that call the right function, and that "
            "are exactly right (every argument)."
        ),
        comparison_table(results),
        Bullets(verdicts(results)),
    ]
    if images:
        blocks.append(Image(RETENTION_PNG, "skill retention per merge"))
    for family, adv in advice.items():
        blocks += [
            Heading(f"Recommendation for the {FAMILY_NAMES.get(family, family)}"),
            Bullets(
                [
                    f"check: {adv['check']}",
                    f"analyze: {adv['facts'] or '-'}",
                    f"recommend: `{adv['method']}`, verdict {adv['verdict']}",
                ]
            ),
            Para(adv["rationale"] or "-"),
        ]
    blocks += [Heading("Notes"), Bullets(notes or ["none"])]
    blocks += [Heading("Run"), Bullets([f"{k}: {v}" for k, v in info.items()])]
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, "Alloy demo", out), encoding="utf-8")
    return ["report.json", "report.md", "report.html", *sorted(images)]
