"""`alloy demo`: train a tiny base and two specialists, merge them every way, measure, report.

Steps: corpora -> tokenizer -> base -> specialists (full fine-tunes and LoRA adapters) ->
check, analyze, recommend -> merges -> evaluation -> report. Every step prints one line with
its time; `summary` gives the comparison table printed at the end.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloy.demo.advice import Advice, advise
from alloy.demo.corpora import SIZES, CorpusSizes, EvalFiles, generate_corpora, write_eval_files
from alloy.demo.merges import apply_adapter_config, merge_configs
from alloy.demo.results import (
    SKILLS,
    ModelResult,
    comparison_table,
    fill_retention,
    verdicts,
    write_report,
)
from alloy.demo.tokenizer import encode_examples, save_tokenizer, train_tokenizer
from alloy.demo.train import (
    SpecialistJob,
    TrainSettings,
    torch_threads,
    train_base,
    train_specialist,
    training_rows,
)
from alloy.demo.workers import Workers, default_workers, measure_job, quiet
from alloy.errors import OutputError, UsageError

MARKER = ".alloy-demo"
FAMILIES = ("full", "lora")  # full fine-tunes, LoRA adapters


@dataclass(frozen=True)
class DemoSize:
    corpora: CorpusSizes
    train: TrainSettings


DEMO_SIZES = {
    "full": DemoSize(SIZES["full"], TrainSettings()),
    "small": DemoSize(SIZES["small"], TrainSettings(base_steps=400, specialist_steps=220)),
}


@dataclass
class DemoResult:
    out: Path
    results: list[ModelResult]
    advice: dict[str, Advice] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def result(self, label: str) -> ModelResult:
        return next(r for r in self.results if r.label == label)


@dataclass(frozen=True)
class Model:
    """A model directory the demo evaluates."""

    family: str  # "full", "lora", or "" for the base
    role: str  # "base", "specialist" or "merge"
    name: str  # base, persona, tools or the merge method
    path: Path
    recommended: bool = False  # the merge `alloy recommend` proposed


def prepare_out(out: Path) -> None:
    """Create ``out``; replace it only when an earlier demo wrote it (never other files)."""
    if out.is_symlink():  # never follow a link to remove what it points to
        raise OutputError(f"{out} is a symbolic link; give --out a real directory.")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{out} is a file; give --out a directory.")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise OutputError(
                f"{out} exists and holds files the demo did not write; give --out a new or "
                "empty directory (a directory from an earlier `alloy demo` is replaced)."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by `alloy demo`; running it again replaces this directory\n")


class Steps:
    """Prints one line per step with its wall time, and keeps the times."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, name: str, what: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._t
        self._t = now
        self.echo(f"[{name}] {what} ({self.timings[name]:.1f} s)")


def _merge(config: dict[str, Any], out: Path, seed: int) -> None:
    from alloy.api import merge

    merge(config, out, random_seed=seed, force=True)


def _train(
    out: Path, size: DemoSize, seed: int, steps: Steps, workers: Workers
) -> tuple[EvalFiles, dict[str, Path]]:
    s = size.train
    corpora = generate_corpora(seed, size.corpora)
    files = write_eval_files(corpora, out / "data" / "eval")
    train_dir = out / "data" / "train"
    train_dir.mkdir(parents=True)
    for c in corpora.values():
        (train_dir / f"{c.name}.txt").write_text("\n".join(c.train) + "\n", encoding="utf-8")
    counts = ", ".join(f"{c.name} {len(c.train)}/{len(c.held_out)}" for c in corpora.values())
    steps.done("corpora", f"train/held-out examples: {counts}")

    tokenizer = train_tokenizer([t for c in corpora.values() for t in c.train], s.vocab)
    save_tokenizer(tokenizer, out / "tokenizer")
    examples = {name: encode_examples(tokenizer, c.train) for name, c in corpora.items()}
    rows = training_rows(s, examples, seed)
    steps.done("tokenizer", f"byte-level BPE, {len(tokenizer)} tokens")

    paths = {"base": out / "models" / "base"}
    log = train_base(s, tokenizer, rows["base"], paths["base"], seed)
    steps.done(
        "base",
        f"Llama, {s.layers} layers x {s.hidden}, {log.parameters / 1e6:.2f}M parameters, "
        f"{log.steps} steps, loss {log.first_loss:.2f} -> {log.last_loss:.2f}",
    )
    jobs = []
    for i, skill in enumerate(SKILLS):
        paths[f"{skill}-full"] = out / "models" / f"{skill}-full"
        paths[f"{skill}-adapter"] = out / "adapters" / f"{skill}-lora"
        jobs.append(
            SpecialistJob(
                "full", s, paths["base"], rows[skill], paths[f"{skill}-full"], seed + 10 + i
            )
        )
        jobs.append(
            SpecialistJob(
                "lora", s, paths["base"], rows[skill], paths[f"{skill}-adapter"], seed + 20 + i
            )
        )
    logs = workers.map(train_specialist, jobs)
    losses = "; ".join(
        f"{j.out.name} {lg.first_loss:.2f} -> {lg.last_loss:.2f}" for j, lg in zip(jobs, logs)
    )
    steps.done(
        "specialists",
        f"{s.specialist_steps} steps each, full fine-tunes at lr {s.full_lr:g}, LoRA rank "
        f"{s.lora_rank} at lr {s.lora_lr:g}; loss {losses}",
    )
    return files, paths


def _family_refs(paths: dict[str, Path], family: str) -> tuple[str, str, str]:
    """(base, persona, tools) model references of a family: directories or base+adapter."""
    base = str(paths["base"])
    if family == "full":
        return base, str(paths["persona-full"]), str(paths["tools-full"])
    return base, f"{base}+{paths['persona-adapter']}", f"{base}+{paths['tools-adapter']}"


def params_text(config: dict[str, Any] | None) -> str:
    """The parameters of a merge config, in one line."""
    if config is None:
        return "none"
    parts = [f"{k}={v}" for k, v in (config.get("parameters") or {}).items()]
    for m in config.get("models", []):
        parts += [f"{k}={v}" for k, v in (m.get("parameters") or {}).items()]
    return ", ".join(parts) or "defaults"


def _merges(
    out: Path, paths: dict[str, Path], seed: int, steps: Steps
) -> tuple[dict[str, Model], dict[str, Advice], list[str]]:
    models = {"base": Model("", "base", "base", paths["base"])}
    notes: list[str] = []
    for skill in SKILLS:
        models[f"{skill}-full"] = Model("full", "specialist", skill, paths[f"{skill}-full"])
    for skill in SKILLS:  # the adapters applied to the base, to evaluate the LoRA specialists
        applied = out / "models" / f"{skill}-lora"
        _merge(
            apply_adapter_config(str(paths["base"]), str(paths[f"{skill}-adapter"])), applied, seed
        )
        models[f"{skill}-lora"] = Model("lora", "specialist", skill, applied)
    steps.done("adapters", "each LoRA adapter applied to the base by `alloy merge` (base+adapter)")

    advice = {}
    for family in FAMILIES:
        adv = advise(*_family_refs(paths, family))
        advice[family] = adv
        if adv.config is None:
            notes.append(f"{family}: alloy check refused the merge: {adv.check}")
        steps.done(
            f"recommend {family}",
            f"check: {adv.check} analyze: {adv.facts}. recommend: {adv.method} "
            f"({params_text(adv.config)}), verdict: {adv.verdict}",
        )

    for family in FAMILIES:
        rec = advice[family].config
        if rec is not None:
            label = f"{family}-recommended"
            _merge(rec, out / "merges" / label, seed)
            models[label] = Model(
                family, "merge", str(rec["merge_method"]), out / "merges" / label, True
            )
        for method, config in merge_configs(*_family_refs(paths, family)).items():
            label = f"{family}-{method}"
            _merge(config, out / "merges" / label, seed)
            models[label] = Model(family, "merge", method, out / "merges" / label)
    n = sum(1 for m in models.values() if m.role == "merge")
    steps.done("merge", f"{n} merges in {out / 'merges'}, each with its report")
    return models, advice, notes


def run_demo(
    out: str | Path = "alloy-demo",
    *,
    size: str = "full",
    seed: int = 0,
    workers: int | None = None,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole demo into ``out`` and return every model's measurements. ``workers``
    processes train the specialists and measure the models (default: 2, or 1 on one core);
    the results do not depend on it."""
    if size not in DEMO_SIZES:
        raise UsageError(f"unknown demo size {size!r}: use {' or '.join(DEMO_SIZES)}.")
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import load_sets

    out = Path(out)
    demo = DEMO_SIZES[size]
    prepare_out(out)
    steps = Steps(echo)
    with (
        warnings.catch_warnings(),
        torch_threads(demo.train.threads),
        Workers(workers or default_workers()) as pool,
    ):
        quiet()  # the libraries' advisory warnings, in this process and the workers
        files, paths = _train(out, demo, seed, steps, pool)
        models, advice, notes = _merges(out, paths, seed, steps)
        sets = load_sets(files.data_specs(), files.probe_specs())
        options = EvalOptions(batch_size=32, max_new_tokens=48)
        jobs = [(label, m.path, sets, options) for label, m in models.items()]
        measured = dict(zip(models, pool.map(measure_job, jobs)))
        steps.done("evaluate", f"{len(models)} models on {len(sets.names)} held-out sets")

    results = model_results(models, measured)
    _record_evaluations(models, sets, measured, options)
    info = {"size": size, "seed": seed}
    info.update({f"{k} (s)": round(v, 1) for k, v in steps.timings.items()})
    write_report(out, results, notes, info, {f: a.to_dict() for f, a in advice.items()})
    steps.done("report", f"{out / 'report.md'}; each merge's own report.md has its comparison")
    return DemoResult(out, results, advice, notes, dict(steps.timings))


def _record_evaluations(
    models: dict[str, Model], sets: Any, measured: dict[str, Any], options: Any
) -> None:
    """Write each merge's comparison with the base and its family's specialists into the
    merge's own report (report.md, report.json, model card), as `alloy eval --write-report`."""
    from alloy.evaluate.run import compare_measurements
    from alloy.report.report import record_evaluation

    for label, m in models.items():
        if m.role != "merge":
            continue
        sources = [("base", models["base"].path)]
        sources += [(f"{s}-{m.family}", models[f"{s}-{m.family}"].path) for s in SKILLS]
        ev = compare_measurements(
            (label, m.path), sources, sets, measured, options, 0.0, method=m.name
        )
        record_evaluation(m.path, ev.to_dict())


def summary(result: DemoResult) -> str:
    """The table printed at the end of the demo, the verdicts and where the report is."""
    from alloy.report.blocks import table_text

    lines = [table_text(comparison_table(result.results)), ""]
    lines += verdicts(result.results)
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"report: {result.out / 'report.md'} (also report.html and retention.png)")
    return "\n".join(lines)


def model_results(models: dict[str, Model], measured: dict[str, Any]) -> list[ModelResult]:
    """The demo table's rows: each model's measured values (``measured[label].values``, keyed
    by (set, metric)) and its retention of each skill."""
    results = [
        ModelResult(
            label=label,
            family=m.family,
            role=m.role,
            name=m.name,
            path=str(m.path),
            values={f"{k[0]}/{k[1]}": v for k, v in measured[label].values.items()},
            recommended=m.recommended,
        )
        for label, m in models.items()
    ]
    fill_retention(results)
    return results
