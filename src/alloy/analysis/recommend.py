"""`alloy recommend`: a method, its parameters and the reasons, from measured statistics.

The rules, in order (each cites the numbers it used):

1. The models must be compatible (`alloy check`): otherwise stop, listing the fields; a
   vocabulary of another size stops too, with how to resize it and the ``tokenizer_source``
   setting to use afterwards.
2. Without a base there are no task vectors, so never task arithmetic: two models -> SLERP at
   t = 0.5 (linear if the weights are practically parallel), three or more -> multi-SLERP.
3. With a base (`alloy.analysis.rules`): near-identical task vectors -> linear; small, dense
   task vectors (the LLM regime) or three or more fine-tunes -> task arithmetic, λ lowered when
   its exactly predicted distance from the base would exceed the warning threshold; two
   fine-tunes with large or sparse task vectors -> TIES, densities keeping 90% of each task
   vector's energy. Every recommendation states the sources' distances from the base and the
   merge's predicted one (`alloy.analysis.distance`).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from alloy.analysis.analyze import Analysis, analyze, check_options
from alloy.analysis.check import check
from alloy.analysis.distance import distance_record, distance_sentence
from alloy.analysis.inventory import parse_refs
from alloy.analysis.rules import task_vector_rules
from alloy.arch.compat import VOCAB_HINT
from alloy.arch.differences import CompatReport
from alloy.arch.tokenizer import tokenizer_info
from alloy.config.dtypes import canonical_dtype
from alloy.config.schema import ModelRef
from alloy.errors import OutputError, UsageError
from alloy.io.hub import resolve_model
from alloy.tabulate import percent

PARALLEL_WEIGHTS = 0.9999
RETRAIN_CONFLICT = 0.55
RETRAIN_LAYERS = 0.5


@dataclass
class Recommendation:
    verdict: str  # "merge", "retrain" or "stop"
    method: str | None
    config: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    rationale: str = ""
    memory: dict[str, Any] | None = None  # `analysis.memory.memory_fit`, by `alloy.api.recommend`
    distance: dict[str, Any] | None = None  # `analysis.distance.distance_record`

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
            "distance": self.distance,
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
    method, config, reasons = task_vector_rules(a) if a.has_base else _weights_rules(a)
    verdict, verdict_text = _verdict(a)
    config = {"merge_method": method, **config}
    if tokenizer[0] is not None:
        config["tokenizer_source"] = tokenizer[0]
        reasons.append(tokenizer[1])
    config["dtype"] = dtype
    distance = distance_record(a, method, config)
    if distance is not None:
        reasons.append(distance_sentence(distance))
    if verdict_text:
        reasons.append(verdict_text)
    return Recommendation(verdict, method, config, reasons, " ".join(reasons), distance=distance)


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
