"""`alloy recommend`'s rules for fine-tunes of one base (rule 3 of `alloy.analysis.recommend`).

In order, on the whole-model statistics of `alloy analyze`:

1. **Near-identical task vectors** (every pairwise cosine >= `NEAR_IDENTICAL`) -> linear, equal
   weights: averaging loses nothing.
2. **Small, dense task vectors** (every relative norm < `SMALL_DELTA`, each changing >= `DENSE`
   of its entries: the regime of LLM fine-tunes, full or LoRA) or **three or more fine-tunes**
   -> task arithmetic, weights 1, λ = 1: the one method that reliably beat the base in the
   published study of LLM merges (arXiv 2511.21437: every merge of 6 or more fine-tunes did,
   while TIES' share fell from 31% at 2 models to 0% at 12 and TSV-M and Iso-C declined as
   models were added). On the real demo's two LoRA adapters of SmolLM2-135M (relative norms
   0.8% and 1.2%, 79% of the entries changed: a LoRA adapter changes every entry of the
   matrices it targets and none of the embeddings and norms), TIES, the rule before, kept
   58.8% and 39% of the persona's signature phrases (seeds 0 and 1), task arithmetic 87.5% and
   96% (docs/analysis.md). Its distance from the base is predicted exactly
   (`alloy.analysis.distance`); when it would exceed the warning threshold (`warn_threshold`
   times the farthest fine-tune), λ is lowered to meet it: the study's failing merges were
   those that moved the weights 2-6 times as far as task arithmetic did.
3. **Two full fine-tunes with large task vectors** (relative norm >= `SMALL_DELTA`; the tiny
   demo's regime: 17-24%), neither a LoRA adapter (a ``base+adapter`` reference) -> TSV,
   alpha 1: per weight matrix it keeps each task vector's top singular directions and
   decorrelates the two sets before adding them, so two large task vectors neither overshoot
   (task arithmetic: 1.67 times the farthest specialist's distance on the demo, up to 26
   points lost) nor halve (SLERP, linear) nor lose what TIES trims. On the demo's full
   fine-tunes (seeds 0-4 on two machines: ten runs) TSV was the best fixed method in every
   run, 1.0-2.8 points ahead of TIES (docs/analysis.md), as in its paper's full fine-tunes
   (arXiv 2412.00081); it moved the weights 1.15-1.18 times as far as the farthest
   specialist, inside the warning threshold.
4. **Two LoRA adapters with large task vectors, or two fine-tunes with sparse ones** -> TIES,
   each model's density the smallest that keeps `ENERGY_KEPT` of its task vector's energy.
   TIES' disjoint mean stays near the sources (a bound is predicted). A LoRA adapter's task
   vector has the adapter's rank in each matrix; on the demo's adapters TSV was 2.6-7.7
   points behind the best method in 3 of the 10 runs, TIES never more than 2.04.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from alloy.analysis.distance import predict, source_distances, warn_threshold
from alloy.config.modelref import parse_model_ref
from alloy.tabulate import percent

if TYPE_CHECKING:
    from alloy.analysis.analyze import Analysis

NEAR_IDENTICAL = 0.95
SMALL_DELTA = 0.03
DENSE = 0.5
ENERGY_KEPT = 0.9

Rule = tuple[str, dict[str, Any], list[str]]


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


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


def task_arithmetic_lambda(a: Analysis) -> tuple[float, float | None, float | None]:
    """(λ, the distance of task arithmetic at λ = 1, the farthest fine-tune's distance): λ = 1,
    or the largest λ (rounded down to 0.05) that keeps the exact predicted distance within
    `warn_threshold` times the farthest fine-tune's."""
    ones = {"models": [{"model": m, "parameters": {"weight": 1.0}} for m in a.models]}
    p = predict(a, "task_arithmetic", ones)
    far = max((s["overall"] or 0.0 for s in source_distances(a)), default=0.0)
    d = p["overall"] if p is not None else None
    if not d or not far:
        return 1.0, d, far or None
    limit = warn_threshold(len(a.models)) * far
    if d <= limit:
        return 1.0, d, far
    return max(0.05, math.floor(limit / d / 0.05 + 1e-9) * 0.05), d, far


def task_vector_rules(a: Analysis) -> Rule:
    """The method, its config (without ``merge_method``) and the reasons, for an analysis with
    a base (see the module docstring)."""
    m = a.metrics(a.total)
    refs, n = a.models, len(a.models)
    rel, cos = m["relative_norm"], m["cosine"]
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
    small = (
        max(r or 0.0 for r in rel) < SMALL_DELTA and min(c or 0.0 for c in m["changed"]) >= DENSE
    )
    if n >= 3 or (n == 2 and small):
        return _task_arithmetic(a, m, norms, small)
    if n == 2 and max(r or 0.0 for r in rel) >= SMALL_DELTA and not any(map(is_adapter, refs)):
        return _tsv(a, norms)
    return _ties(a, m)


def is_adapter(ref: str) -> bool:
    """Whether the model reference ``ref`` is a base with a LoRA adapter applied."""
    try:
        return parse_model_ref(ref).lora is not None
    except (TypeError, ValueError):
        return False


def _tsv(a: Analysis, norms: str) -> Rule:
    text = (
        f"2 full fine-tunes of one base (not LoRA adapters) with large task vectors (relative "
        f"norms {norms} >= {percent(SMALL_DELTA)}): TSV (alpha 1) keeps, per weight matrix, each "
        "task vector's top singular directions and decorrelates the two sets before adding "
        "them, so the merge neither overshoots (task arithmetic adds two large task vectors) "
        "nor halves each (SLERP, linear) nor drops the entries TIES trims. On the tiny demo's "
        "full fine-tunes it was the best fixed method in each of 10 runs, 1.0-2.8 points ahead "
        "of TIES (docs/analysis.md); `alloy search` can tune alpha."
    )
    config = {"base_model": a.base, "models": [{"model": r} for r in a.models]}
    return "tsv", config, [text]


def _task_arithmetic(a: Analysis, m: dict[str, Any], norms: str, small: bool) -> Rule:
    n = len(a.models)
    lam, d, far = task_arithmetic_lambda(a)
    why = (
        f"small, dense task vectors (relative norms {norms} < {percent(SMALL_DELTA)}; "
        f"{', '.join(percent(c) for c in m['changed'])} of entries changed >= {percent(DENSE)}), "
        "as LLM fine-tunes have"
        if small
        else f"{n} fine-tunes of one base"
    )
    text = (
        f"{why[0].upper() + why[1:]}: task arithmetic adds the task vectors (weights 1), the one "
        "method that reliably beat the base in the published study of LLM merges (arXiv "
        "2511.21437: every merge of 6 or more fine-tunes did, while TIES' share fell from 31% at "
        "2 models to 0% at 12, and TSV-M and Iso-C declined as models were added)."
    )
    config: dict[str, Any] = {
        "base_model": a.base,
        "models": [{"model": r, "parameters": {"weight": 1.0}} for r in a.models],
    }
    if lam < 1.0 and d is not None and far is not None:
        text += (
            f" At λ = 1 it would move the weights {percent(d)} from the base, "
            f"{d / far:.2f} times the farthest fine-tune ({percent(far)}; the warning starts "
            f"above {warn_threshold(n):.2f}x): λ = {lam:.2f} keeps it within."
        )
        config["parameters"] = {"lambda": round(lam, 2)}
    return "task_arithmetic", config, [text]


def _ties(a: Analysis, m: dict[str, Any]) -> Rule:
    """One or two fine-tunes whose task vectors are large or sparse: TIES, each model with the
    density keeping `ENERGY_KEPT` of its energy."""
    refs, conflict, rel = a.models, m["conflict"], m["relative_norm"]
    dens = [ties_density(c10, c50) for c10, c50 in zip(m["top10_energy"], m["top50_energy"])]
    shares = "; ".join(
        f"{r}: {percent(c10 or 0)} in the top 10%, {percent(c50 or 0)} in the top 50% -> {d}"
        for r, c10, c50, d in zip(refs, m["top10_energy"], m["top50_energy"], dens)
    )
    adapters = any(map(is_adapter, refs))
    size = (
        f"large task vectors (relative norms {', '.join(percent(r) for r in rel)})"
        if max(r or 0.0 for r in rel) >= SMALL_DELTA
        else f"sparse task vectors ({', '.join(percent(c) for c in m['changed'])} of entries changed)"
    )
    if adapters:
        size += (
            ", LoRA adapters (low-rank task vectors: on the tiny demo's, TSV was 2.6-7.7 "
            "points behind the best method in 3 of 10 runs, TIES never more than 2.04)"
        )
    conflicts = (
        f"; their TIES-kept signs disagree in {percent(conflict)} of the coordinates both keep at "
        f"density {a.density:g}"
        if conflict is not None
        else ""
    )
    return (
        "ties",
        {
            "base_model": a.base,
            "models": [
                {"model": r, "parameters": {"weight": 1.0, "density": d}}
                for r, d in zip(refs, dens)
            ],
        },
        [
            f"{len(refs)} fine-tune{'s' if len(refs) > 1 else ''} of one base with {size}{conflicts}: "
            "TIES trims each task vector, elects a sign per entry and averages the agreeing "
            "entries, so the merge stays near the fine-tunes where adding large task vectors "
            "(task arithmetic) overshoots and interpolating them (SLERP, linear) halves each. "
            f"Density: the smallest share of entries keeping {percent(ENERGY_KEPT)} of each task "
            f"vector's energy ({shares})."
        ],
    )
