"""Evaluate a merged model and its sources on every set; one model in memory at a time."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alloy.errors import EvaluationError
from alloy.evaluate.compare import Row, compare_row
from alloy.evaluate.data import (
    DataSet,
    ProbeSet,
    check_unique_names,
    load_data_set,
    load_probe_set,
    parse_named,
)
from alloy.evaluate.models import EvalOptions, loaded, transformers_module
from alloy.evaluate.perplexity import perplexity
from alloy.evaluate.probes import METRICS, run_probe_sets

NamedFile = str | Path | tuple[str, str | Path]
ProbeSpec = tuple[str, NamedFile]  # (kind, [name=]file)


@dataclass(frozen=True)
class EvalModel:
    label: str
    path: Path
    role: str  # "source" or "merged"


@dataclass
class EvalSets:
    """The parsed data and probe sets, loaded before any model (bad files fail fast)."""

    data: list[DataSet] = field(default_factory=list)
    probes: list[ProbeSet] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.data and not self.probes

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.data] + [p.name for p in self.probes]


def load_sets(data: Sequence[NamedFile] = (), probes: Sequence[ProbeSpec] = ()) -> EvalSets:
    sets = EvalSets(
        [load_data_set(*parse_named(d)) for d in data],
        [load_probe_set(kind, *parse_named(spec)) for kind, spec in probes],
    )
    check_unique_names(sets.names)
    return sets


@dataclass
class Evaluation:
    """Every model's value on every set and metric, and the comparison rows."""

    models: list[EvalModel]
    sets: list[dict[str, Any]]  # name, kind (perplexity / tool-calls / contains), file
    rows: list[Row]
    tokens: dict[str, dict[str, int]]  # perplexity sets: set -> model label -> scored tokens
    examples: dict[str, dict[str, list[dict[str, Any]]]]  # probe set -> model -> first outputs
    options: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [{**asdict(m), "path": str(m.path)} for m in self.models],
            "sets": self.sets,
            "rows": [r.to_dict() for r in self.rows],
            "tokens": self.tokens,
            "examples": self.examples,
            "options": self.options,
            "seconds": self.seconds,
            "notes": self.notes,
        }


@contextmanager
def _bar(enabled: bool, desc: str) -> Iterator[Any]:
    """A progress bar (None when disabled), closed however the block ends."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="batch", dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()


@dataclass
class ModelMeasurement:
    """One model's values on every set: ``values[(set, metric)]``; perplexity sets' scored
    token counts; the first probe outputs of each probe set."""

    values: dict[tuple[str, str], float]
    tokens: dict[str, int]
    examples: dict[str, list[dict[str, Any]]]


def measure_model(
    label: str, path: Path, sets: EvalSets, options: EvalOptions | None = None
) -> ModelMeasurement:
    """Load one model, measure it on every set (perplexity, probes), release it."""
    options = options or EvalOptions()
    out = ModelMeasurement({}, {}, {})
    with loaded(label, Path(path), options) as lm:
        for d in sets.data:
            with _bar(options.progress, f"{label} · {d.name} perplexity") as bar:
                res = perplexity(lm, d, options, bar)
            out.values[(d.name, "perplexity")] = res.perplexity
            out.tokens[d.name] = res.tokens
        if sets.probes:
            names = ", ".join(p.name for p in sets.probes)
            with _bar(options.progress, f"{label} · probes {names}") as bar:
                results = run_probe_sets(lm, sets.probes, options, bar)
            for p, pres in zip(sets.probes, results):
                for metric, v in pres.metrics.items():
                    out.values[(p.name, metric)] = v
                out.examples[p.name] = pres.examples
    return out


def _models(merged: tuple[str, Path], sources: Sequence[tuple[str, Path]]) -> list[EvalModel]:
    models = [EvalModel(lbl, Path(p), "source") for lbl, p in sources]
    models.append(EvalModel(merged[0], Path(merged[1]), "merged"))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"two models have the same label in {labels}; label them apart.")
    return models


def evaluate_models(
    merged: tuple[str, Path],
    sources: Sequence[tuple[str, Path]],
    sets: EvalSets,
    options: EvalOptions | None = None,
    *,
    method: str | None = None,
) -> Evaluation:
    """Evaluate the sources and the merged model on every set, one model loaded at a time."""
    options = options or EvalOptions()
    if sets.empty:
        raise EvaluationError("nothing to evaluate: give --data NAME=FILE or --probe KIND FILE.")
    transformers_module()  # fail before loading anything when transformers is missing
    started = time.perf_counter()
    models = _models(merged, sources)
    measured = {m.label: measure_model(m.label, m.path, sets, options) for m in models}
    return compare_measurements(
        merged, sources, sets, measured, options, time.perf_counter() - started, method=method
    )


def compare_measurements(
    merged: tuple[str, Path],
    sources: Sequence[tuple[str, Path]],
    sets: EvalSets,
    measured: dict[str, ModelMeasurement],
    options: EvalOptions,
    seconds: float,
    *,
    method: str | None = None,
) -> Evaluation:
    """The evaluation of ``merged`` against ``sources`` from models measured already
    (``measured`` by label), e.g. when several merges share their sources' measurements."""
    models = _models(merged, sources)
    missing = [m.label for m in models if m.label not in measured]
    if missing:
        raise EvaluationError(f"no measurement of {', '.join(missing)}; measure every model.")
    values: dict[tuple[str, str], dict[str, float]] = {}
    tokens: dict[str, dict[str, int]] = {d.name: {} for d in sets.data}
    examples: dict[str, dict[str, list[dict[str, Any]]]] = {p.name: {} for p in sets.probes}
    for m in models:
        got = measured[m.label]
        for key, v in got.values.items():
            values.setdefault(key, {})[m.label] = v
        for name, n in got.tokens.items():
            tokens[name][m.label] = n
        for name, ex in got.examples.items():
            examples[name][m.label] = ex
    rows = []
    set_info: list[dict[str, Any]] = []
    for d in sets.data:
        set_info.append({"name": d.name, "kind": "perplexity", "file": str(d.path)})
        rows.append(_row(d.name, "perplexity", "lower", values, models, method))
    for p in sets.probes:
        set_info.append({"name": p.name, "kind": p.kind, "file": str(p.path)})
        rows += [_row(p.name, k, "higher", values, models, method) for k in METRICS[p.kind]]
    notes = [
        f"{name}: the models' tokenizers split the text into different numbers of tokens "
        f"({', '.join(f'{k} {v}' for k, v in counts.items())}); perplexities are per token "
        "of each tokenizer and compare only roughly."
        for name, counts in tokens.items()
        if len(set(counts.values())) > 1
    ]
    opts = {k: v for k, v in asdict(options).items() if k != "progress"}
    return Evaluation(models, set_info, rows, tokens, examples, opts, seconds, notes)


def _row(
    name: str,
    metric: str,
    direction: Any,
    values: dict[tuple[str, str], dict[str, float]],
    models: list[EvalModel],
    method: str | None,
) -> Row:
    v = values[(name, metric)]
    merged = next(m for m in models if m.role == "merged").label
    sources = {m.label: v.get(m.label, math.nan) for m in models if m.role == "source"}
    return compare_row(name, metric, direction, sources, merged, v[merged], method)
