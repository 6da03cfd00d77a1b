"""`alloy recommend`: a method, its parameters and the reasons, from measured statistics.

The rules, in order (each cites the numbers it used):

1. The models must be compatible (`alloy check`): otherwise stop, listing the fields; a
   vocabulary of another size stops too, with how to resize it and the ``tokenizer_source``
   setting to use afterwards.
2. Without a base there are no task vectors, so never task arithmetic: two models -> SLERP at
   t = 0.5 (linear if the weights are practically parallel), three or more -> multi-SLERP.
3. With a base:
   - task vectors with pairwise cosine >= `NEAR_IDENTICAL` -> linear (averaging loses nothing);
   - two fine-tunes whose TIES-kept signs rarely conflict (< `HIGH_CONFLICT`) -> SLERP from one
     to the other, ``t = |δ1| / (|δ1| + |δ2|)`` so that each task vector enters with the same
     strength: ``(1 - t)|δ1| = t|δ2|``;
   - small, dense task vectors (relative norm < `SMALL_DELTA`, >= `DENSE` of entries changed)
     -> DARE-TIES, density ``p`` so that DARE's added noise ``sqrt((1-p)/p)·|δ|`` stays below
     `DARE_NOISE`·|W|: ``p >= 1 / (1 + (DARE_NOISE / r)^2)``;
   - otherwise (three or more fine-tunes, or frequent conflicts) -> TIES, each model's density
     the smallest that keeps `ENERGY_KEPT` of its task vector's energy, interpolated from the
     measured shares in its top 10% and top 50% entries (the curve is concave, so the chord
     gives an upper bound).
4. Verdict: when more than `RETRAIN_LAYERS` of the layers have a conflict rate above
   `RETRAIN_CONFLICT` (the fine-tunes push most kept weights in opposite directions, more than
   unrelated edits would: those sit at 50%), retraining on the combined data is likely better
   than any merge.
5. Memory: the recommended merge's peak estimate (`alloy.api.recommend` plans it, headers
   only) is compared with the available RAM (`alloy.analysis.memory`), with a device or method
   suggestion when it does not fit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from alloy.analysis.analyze import Analysis, analyze, check_options
from alloy.analysis.check import check
from alloy.analysis.inventory import parse_refs
from alloy.arch.compat import VOCAB_HINT
from alloy.arch.differences import CompatReport
from alloy.arch.tokenizer import tokenizer_info
from alloy.config.dtypes import canonical_dtype
from alloy.config.schema import ModelRef
from alloy.errors import OutputError, UsageError
from alloy.io.hub import resolve_model
from alloy.tabulate import percent

NEAR_IDENTICAL = 0.95
PARALLEL_WEIGHTS = 0.9999
HIGH_CONFLICT = 0.30
RETRAIN_CONFLICT = 0.55
RETRAIN_LAYERS = 0.5
SMALL_DELTA = 0.01
DENSE = 0.9
DARE_NOISE = 0.01
ENERGY_KEPT = 0.9


@dataclass
class Recommendation:
    verdict: str  # "merge", "retrain" or "stop"
    method: str | None
    config: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    rationale: str = ""
    memory: dict[str, Any] | None = None  # `analysis.memory.memory_fit`, by `alloy.api.recommend`

    def yaml(self) -> str:
        if self.config is None:
            return ""
        text = f"Method Rationale: {self.rationale}"
        if self.memory:
            text += f" Memory: {self.memory['summary']}"
        body = "\n".join("# " + line for line in _wrap(text, 96))
        head = f"# Recommended by alloy recommend ({self.verdict}: {self.method}).\n"
        return head + body + "\n" + yaml.safe_dump(self.config, sort_keys=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "method": self.method,
            "config": self.config,
            "reasons": self.reasons,
            "rationale": self.rationale,
            "memory": self.memory,
        }

    def render(self) -> str:
        lines = [f"verdict: {self.verdict}" + (f"  method: {self.method}" if self.method else "")]
        lines += ["", "Method Rationale", *_wrap(self.rationale, 96)]
        if self.memory:
            lines += ["", f"memory: {self.memory['summary']}"]
        if self.config is not None:
            lines += ["", "config:", yaml.safe_dump(self.config, sort_keys=False).rstrip()]
        return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _round_up(v: float, step: float = 0.05) -> float:
    return round(min(1.0, math.ceil(v / step - 1e-9) * step), 2)


def ties_density(c10: float | None, c50: float | None) -> float:
    """The smallest density keeping ENERGY_KEPT of the energy, from the shares in the top 10%
    and 50% entries: the chords (0.1, c10)-(0.5, c50)-(1, 1) of a concave curve."""
    if c10 is None or c50 is None:
        return 0.5
    if c10 >= ENERGY_KEPT:
        return 0.1
    if c50 >= ENERGY_KEPT:
        d = 0.1 + 0.4 * (ENERGY_KEPT - c10) / (c50 - c10)
    else:
        d = 0.5 + 0.5 * (ENERGY_KEPT - c50) / (1 - c50)
    return min(_round_up(d), 1.0)


def dare_density(relative_norm: float) -> float:
    """The smallest p with DARE's noise sqrt((1-p)/p)·r <= DARE_NOISE, clamped to [0.1, 0.9]."""
    if relative_norm <= 0:
        return 0.1
    p = 1 / (1 + (DARE_NOISE / relative_norm) ** 2)
    return min(0.9, max(0.1, _round_up(p)))


def stop(report: CompatReport) -> Recommendation:
    """The models cannot be merged: the fields that differ, and what to do."""
    rows = report.at("blocks") + report.at("crime")
    listed = "; ".join(f"{d.key} ({' / '.join(v or '-' for v in d.values)})" for d in rows[:8])
    vocab = any(d.hint.startswith(VOCAB_HINT) or d.key.endswith("vocab_size") for d in rows)
    text = f"Stop: the models are not compatible: {listed}."
    if vocab:
        text += f" The vocabularies differ: {VOCAB_HINT}."
    else:
        text += " Merge only fine-tunes of one architecture (alloy check lists every difference)."
    return Recommendation("stop", None, None, [text], text)


def _weights_rules(a: Analysis) -> tuple[str, dict[str, Any], list[str]]:
    m = a.metrics(a.total)
    refs = a.models
    if len(refs) == 2:
        cos, angle = m["cosine"][0], m["angle_deg"][0]
        if cos is not None and cos >= PARALLEL_WEIGHTS:
            return (
                "linear",
                {"models": [{"model": r, "parameters": {"weight": 0.5}} for r in refs]},
                [
                    f"No base model, so no task vectors: never task arithmetic. The weights are "
                    f"practically parallel (cosine {cos:.6f}, angle {angle:.3f}°), where SLERP "
                    "equals linear interpolation: linear, weights 0.5 each."
                ],
            )
        return (
            "slerp",
            {
                "base_model": refs[0],
                "models": [{"model": r} for r in refs],
                "parameters": {"t": 0.5},
            },
            [
                f"No base model, so no task vectors: never task arithmetic. SLERP follows the arc "
                f"between the two models (cosine {_fmt(cos)}, angle {_fmt(angle, 2)}°) and keeps "
                "the norm that linear averaging shrinks; t = 0.5 weighs them equally."
            ],
        )
    angles = ", ".join(_fmt(x, 2) + "°" for x in m["angle_deg"])
    return (
        "multislerp",
        {"models": [{"model": r, "parameters": {"weight": 1.0}} for r in refs]},
        [
            f"No base model, so no task vectors: never task arithmetic. Multi-SLERP takes the "
            f"spherical mean of the {len(refs)} models (pairwise angles {angles}), equal weights."
        ],
    )


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _task_vector_rules(a: Analysis) -> tuple[str, dict[str, Any], list[str]]:
    m = a.metrics(a.total)
    refs, n = a.models, len(a.models)
    rel, cos, conflict = m["relative_norm"], m["cosine"], m["conflict"]
    norms = ", ".join(percent(r) for r in rel)
    if n >= 2 and all(c is not None and c >= NEAR_IDENTICAL for c in cos):
        return (
            "linear",
            {"models": [{"model": r, "parameters": {"weight": 1.0 / n}} for r in refs]},
            [
                f"The task vectors are nearly identical (pairwise cosine {', '.join(_fmt(c) for c in cos)} "
                f">= {NEAR_IDENTICAL}; relative norms {norms}): averaging the fine-tunes loses "
                "nothing, so linear, equal weights."
            ],
        )
    if n == 2 and (conflict is None or conflict < HIGH_CONFLICT):
        n1, n2 = m["norm"]
        t = round(n1 / (n1 + n2), 2) if n1 + n2 > 0 else 0.5
        return (
            "slerp",
            {"base_model": refs[0], "models": [{"model": r} for r in refs], "parameters": {"t": t}},
            [
                f"Two fine-tunes of one base whose kept signs rarely conflict ({percent(conflict or 0.0)} "
                f"< {percent(HIGH_CONFLICT)} at density {a.density:g}; cosine {_fmt(cos[0])}): SLERP "
                f"from {refs[0]} to {refs[1]}. t = |δ1| / (|δ1| + |δ2|) = {n1:.4g} / "
                f"({n1:.4g} + {n2:.4g}) = {t}, so each task vector enters with the same strength."
            ],
        )
    return _sparse_rules(a, m, norms)


def _sparse_rules(
    a: Analysis, m: dict[str, Any], norms: str
) -> tuple[str, dict[str, Any], list[str]]:
    """Three or more fine-tunes, or two whose signs conflict: DARE-TIES for small, dense task
    vectors, TIES otherwise, each model with its density."""
    refs, n, conflict = a.models, len(a.models), m["conflict"]
    rel, base = m["relative_norm"], {"base_model": a.base}
    why = (
        f"{n} fine-tunes of one base"
        if n >= 3
        else f"two fine-tunes whose TIES-kept signs disagree in {percent(conflict or 0.0)} of the "
        f"coordinates both keep (>= {percent(HIGH_CONFLICT)} at density {a.density:g})"
    )
    changed = m["changed"]
    if max(rel) < SMALL_DELTA and min(changed) >= DENSE:
        dens = [dare_density(r) for r in rel]
        return (
            "dare_ties",
            {
                **base,
                "models": [
                    {"model": r, "parameters": {"weight": 1.0, "density": d}}
                    for r, d in zip(refs, dens)
                ],
            },
            [
                f"{why[0].upper() + why[1:]}, and the task vectors are small and dense (relative norms {norms} < "
                f"{percent(SMALL_DELTA)}; {', '.join(percent(c) for c in changed)} of entries changed): "
                "DARE-TIES drops entries at random and rescales. Density p = 1 / (1 + (ε/r)²) with "
                f"ε = {DARE_NOISE} keeps DARE's added noise below {percent(DARE_NOISE)} of |W|: "
                f"{', '.join(str(d) for d in dens)}."
            ],
        )
    dens = [ties_density(c10, c50) for c10, c50 in zip(m["top10_energy"], m["top50_energy"])]
    shares = "; ".join(
        f"{r}: {percent(c10 or 0)} in the top 10%, {percent(c50 or 0)} in the top 50% -> {d}"
        for r, c10, c50, d in zip(refs, m["top10_energy"], m["top50_energy"], dens)
    )
    return (
        "ties",
        {
            **base,
            "models": [
                {"model": r, "parameters": {"weight": 1.0, "density": d}}
                for r, d in zip(refs, dens)
            ],
        },
        [
            f"{why[0].upper() + why[1:]}: TIES trims each task vector, elects a sign per entry and averages the "
            f"agreeing entries. Density: the smallest share of entries keeping {percent(ENERGY_KEPT)} "
            f"of each task vector's energy ({shares})."
        ],
    )


def _verdict(a: Analysis) -> tuple[str, str]:
    if not a.has_base or len(a.models) < 2:
        return "merge", ""
    rates = [a.metrics(s)["conflict"] for s in a.layers.values()]
    rates = [r for r in rates if r is not None]
    if not rates:
        return "merge", ""
    high = [r for r in rates if r > RETRAIN_CONFLICT]
    share = len(high) / len(rates)
    summary = (
        f"in {len(high)} of {len(rates)} layers more than {percent(RETRAIN_CONFLICT)} of the "
        f"coordinates that two or more task vectors keep have opposite signs (median "
        f"{percent(median(rates))}; unrelated edits give 50%)"
    )
    if share > RETRAIN_LAYERS:
        return "retrain", (
            f"Verdict: retraining on the combined data is likely better than merging: {summary}, "
            "so a merge cancels most of each fine-tune's change there."
        )
    return "merge", f"Verdict: merge: {summary}."


def _tokenizer_source(refs: Sequence[ModelRef]) -> tuple[str | None, str]:
    """When the vocabularies differ at equal size: the model that changed the vocabulary of
    the reference (the base, or the first model), whose new tokens only it has trained; when
    several did, the one holding the most of all models' tokens."""
    infos = [tokenizer_info(resolve_model(r)) for r in refs]
    vocabs = [i.vocab for i in infos if i is not None and i.vocab]
    if len(vocabs) != len(refs) or len({frozenset(v.items()) for v in vocabs}) == 1:
        return None, ""
    changed = [i for i in range(1, len(refs)) if vocabs[i] != vocabs[0]]
    if len(changed) == 1:
        i = changed[0]
        new = sorted(set(vocabs[i].values()) - set(vocabs[0].values()))[:3]
        return str(refs[i]), (
            f"The vocabularies map some ids to other tokens: only {refs[i]} changed the "
            f"vocabulary of {refs[0]} (new tokens such as {', '.join(map(repr, new))}), so "
            f"tokenizer_source: {refs[i]}."
        )
    union = set().union(*(set(v.values()) for v in vocabs))
    best = max(changed, key=lambda i: (len(set(vocabs[i].values())), -i))
    return str(refs[best]), (
        f"The vocabularies map some ids to other tokens, and {len(changed)} models changed them "
        f"differently, so no tokenizer fits all: tokenizer_source {refs[best]}, whose vocabulary "
        f"holds {len(set(vocabs[best].values()))} of the {len(union)} distinct tokens."
    )


def from_analysis(
    a: Analysis, *, tokenizer: tuple[str | None, str] = (None, ""), dtype: str = "bfloat16"
) -> Recommendation:
    """The recommendation for an analysis (whose models passed the compatibility check)."""
    method, config, reasons = _task_vector_rules(a) if a.has_base else _weights_rules(a)
    verdict, verdict_text = _verdict(a)
    config = {"merge_method": method, **config}
    if tokenizer[0] is not None:
        config["tokenizer_source"] = tokenizer[0]
        reasons.append(tokenizer[1])
    config["dtype"] = dtype
    if verdict_text:
        reasons.append(verdict_text)
    return Recommendation(verdict, method, config, reasons, " ".join(reasons))


def recommend(
    models: Sequence[str | ModelRef],
    base: str | ModelRef | None = None,
    *,
    density: float = 0.5,
    sample: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    on_tensor: Callable[[str], None] | None = None,
) -> Recommendation:
    """Check, analyze and recommend (see the module docstring for the rules)."""
    check_options(density, sample, workers)
    refs = parse_refs(list(models))
    all_refs = ([*parse_refs([base])] if base is not None else []) + refs
    if len(all_refs) < 2:
        raise UsageError("give a base and at least one model, or at least two models")
    report = check(all_refs)
    if not report.mergeable():
        return stop(report)
    a = analyze(
        refs, base, density=density, sample=sample, seed=seed, workers=workers, on_tensor=on_tensor
    )
    return from_analysis(a, tokenizer=_tokenizer_source(all_refs), dtype=_dtype(all_refs[0]))


def _dtype(ref: ModelRef) -> str:
    """The storage dtype of the reference model's config (bfloat16 when it names none)."""
    cfg_path = resolve_model(ref) / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        name = canonical_dtype(str(cfg.get("torch_dtype") or cfg.get("dtype") or ""))
        if name in ("float32", "float16", "bfloat16"):
            return name
    return "bfloat16"


def write_config(rec: Recommendation, path: Path) -> None:
    if rec.config is None:
        raise UsageError("no config to write: the recommendation is to stop")
    try:
        path.write_text(rec.yaml())
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}.") from e
