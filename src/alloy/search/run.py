"""The search: sources measured once, trials asked of Optuna and run in the pool, the best
re-measured on the test split, fixed configs (baselines, the recommendation) measured beside."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alloy.errors import AlloyError, EvaluationError, UsageError
from alloy.evaluate.models import EvalOptions
from alloy.search.pool import Pool, Setup
from alloy.search.score import Score, skills_of
from alloy.search.score import score as score_values
from alloy.search.seed import model_refs, seed_values
from alloy.search.space import SearchSpace
from alloy.search.splits import Splits
from alloy.search.study import Budget, ask, enqueue, finished_trials, open_study, tell
from alloy.search.trial import TrialEvaluator, Values

log = logging.getLogger("alloy")


@dataclass(frozen=True)
class SearchOptions:
    trials: int = 40
    timeout: float | None = None
    sampler: str = "tpe"
    seed: int = 0
    workers: int = 1
    ray: str | None = None
    resume: bool = False
    objective: str = "min-retention"
    top: int = 3  # trials re-measured on the test split
    recommend: bool = True  # the recommended config is the first trial
    progress: bool = False
    guards: tuple[str, ...] = ()  # sets that only guard against degradation, never skills


@dataclass
class Measured:
    """A config (a trial, a baseline, a source) with its scores on both splits."""

    label: str
    kind: str  # "trial", "baseline", "recommended", "source"
    config: dict[str, Any] | None
    validation: Score | None
    test: Score | None = None
    number: int | None = None
    error: str | None = None


@dataclass
class SearchState:
    space: SearchSpace
    evaluator: TrialEvaluator
    sources: dict[str, dict[str, Values]]
    skills: list[str]
    reference: str
    trials: list[Measured] = field(default_factory=list)
    fixed: list[Measured] = field(default_factory=list)
    source_rows: list[Measured] = field(default_factory=list)

    def score(self, values: Values, split: str) -> Score:
        sets = self.evaluator.splits.of(split)
        return score_values(sets, self.sources[split], self.reference, values, self.skills)

    def both(
        self, label: str, kind: str, config: Mapping[str, Any], source: str | None = None
    ) -> Measured:
        """``config`` (relative paths from ``source``'s directory) merged once and measured
        on both splits."""
        try:
            tensors = self.evaluator.merge(config, source)
        except AlloyError as e:
            return Measured(label, kind, dict(config), None, error=f"{type(e).__name__}: {e}")
        val = self.score(self.evaluator.measure(tensors, "validation"), "validation")
        test = self.score(self.evaluator.measure(tensors, "test"), "test")
        return Measured(label, kind, dict(config), val, test)


def rank_key(m: Measured) -> tuple[bool, float]:
    s = m.validation
    if s is None:
        return (False, float("-inf"))
    # two tiers: trials that degrade no set first; within each, the smallest retention. (When
    # no merge can stay within 10% of every specialist, the best degraded one still keeps the
    # most of each skill, rather than the one that misses the rule by the least.)
    return (s.feasible, s.min_retention)


def _seed(state: SearchState, study: Any, options: SearchOptions) -> None:
    """Queue the recommended config as the first trial, or measure it beside the trials."""
    refs = model_refs(state.space)
    if not options.recommend or refs is None or finished_trials(study) > 0:
        return
    from alloy.analysis.recommend import recommend

    try:
        rec = recommend(refs, state.reference)
    except AlloyError as e:
        log.warning("the recommendation could not seed the search: %s", e)
        return
    if rec.config is None:
        return
    values = seed_values(state.space, rec.config)
    if values is not None:
        enqueue(study, state.space, values)
    else:
        label = f"recommended ({rec.method}, outside the space)"
        state.fixed.append(state.both(label, "recommended", rec.config))


def _loop(state: SearchState, study: Any, pool: Pool, options: SearchOptions) -> None:
    budget = Budget(options.trials, options.timeout, time.perf_counter())
    bar = _bar(options, finished_trials(study))
    pending: dict[cf.Future[Any], tuple[Any, dict[str, Any]]] = {}
    try:
        while True:
            running = finished_trials(study) + len(pending)
            while len(pending) < pool.size and not budget.done(running):
                trial, values = ask(study, state.space)
                config = state.space.instantiate(values)
                trial.set_user_attr("config", config)
                pending[pool.submit(config)] = (trial, config)
                running += 1
            if not pending:
                break
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                trial, config = pending.pop(fut)
                pool.release(fut)
                result = fut.result()
                got = result if isinstance(result, str) else state.score(result, "validation")
                tell(study, trial, got, options.objective, state.skills)
                _update(bar, got)
    finally:
        for fut in pending:
            fut.cancel()
        if bar is not None:
            bar.close()


def _bar(options: SearchOptions, done: int) -> Any:
    if not options.progress:
        return None
    from tqdm import tqdm

    bar = tqdm(total=options.trials, initial=done, desc="alloy search", unit="trial")
    bar.best = None
    return bar


def _update(bar: Any, got: Score | str) -> None:
    if bar is None:
        return
    if isinstance(got, Score) and got.feasible:
        bar.best = got.min_retention if bar.best is None else max(bar.best, got.min_retention)
    if bar.best is not None:
        bar.set_postfix_str(f"best min retention {bar.best:.1%}")
    bar.update(1)


def _collect(state: SearchState, study: Any) -> None:
    """Every finished trial of the study (this run's and earlier ones) as a `Measured`."""
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished():
            continue
        config = t.user_attrs.get("config")
        error = t.user_attrs.get("error")
        sc = t.user_attrs.get("score")
        val = _score_from(sc) if sc else None
        state.trials.append(
            Measured(f"trial {t.number}", "trial", config, val, None, t.number, error)
        )


def _score_from(d: Mapping[str, Any]) -> Score:
    return Score(dict(d["retention"]), dict(d["values"]), list(d["degraded"]), d["violation"])


def _retest(state: SearchState, top: int) -> None:
    """The ``top`` best trials on the validation split, measured on the test split."""
    ranked = sorted((m for m in state.trials if m.validation), key=rank_key, reverse=True)
    for m in ranked[:top]:
        assert m.config is not None
        test = state.evaluator.run(m.config, "test")
        m.test = state.score(test, "test")


def check_guards(guards: Sequence[str], names: Sequence[str]) -> None:
    """Every ``--guard`` names one of the sets (``names``)."""
    unknown = sorted(set(guards) - set(names))
    if unknown:
        raise UsageError(
            f"--guard {', '.join(unknown)}: no --eval or --probe set has that name "
            f"(the sets: {', '.join(names)})."
        )


def guarded(skills: list[str], guards: Sequence[str]) -> list[str]:
    """``skills`` without those of the sets named in ``guards`` (a probe skill is
    ``set/metric``)."""
    left = [s for s in skills if s.split("/")[0] not in guards]
    if not left:
        raise EvaluationError(
            f"every skill ({', '.join(skills)}) is a --guard set: nothing is left to keep; "
            "guard only the sets that no fine-tune was trained for."
        )
    return left


def search(
    space: SearchSpace,
    splits: Splits,
    out: Path,
    *,
    reference: str | None = None,
    eval_options: EvalOptions | None = None,
    options: SearchOptions | None = None,
    baselines: Sequence[tuple[str, Mapping[str, Any], str | None]] = (),
    lora_base: str | None = None,
) -> SearchState:
    """Run the search of ``space`` into ``out`` (the study, then the outputs)."""
    options = options or SearchOptions()
    check_guards(options.guards, splits.validation.names)
    eval_options = eval_options or EvalOptions()
    setup = Setup(space, splits, reference, eval_options, options.seed, lora_base)
    with setup.evaluator() as ev:
        sources = ev.measure_sources()
        ref = str(ev.reference)
        skills = guarded(skills_of(splits.validation, sources["validation"], ref), options.guards)
        state = SearchState(space, ev, sources, skills, ref)
        n_obj = len(skills) if options.objective == "pareto" else 1
        study = open_study(out, space, n_obj, options.sampler, options.seed, options.resume)
        for label, values in sources["validation"].items():
            test = state.score(sources["test"][label], "test")
            state.source_rows.append(
                Measured(label, "source", None, state.score(values, "validation"), test)
            )
        for label, config, source in baselines:
            state.fixed.append(state.both(label, "baseline", config, source))
        _seed(state, study, options)
        pool = Pool(setup, ev, options.workers, options.ray)
        try:
            _loop(state, study, pool, options)
        finally:
            pool.close()
        _collect(state, study)
        _retest(state, options.top)
    return state


def best(state: SearchState) -> Measured | None:
    ranked = sorted((m for m in state.trials if m.validation), key=rank_key, reverse=True)
    return ranked[0] if ranked else None


def best_yaml(state: SearchState) -> str:
    b = best(state)
    if b is None or b.config is None:
        return ""
    assert b.validation is not None
    head = (
        f"# The best of {len(state.trials)} trials of alloy search ({b.label}): smallest "
        f"retention {b.validation.min_retention:.1%} on the validation split"
    )
    if b.test is not None:
        head += f", {b.test.min_retention:.1%} on the test split"
    return head + ".\n" + yaml.safe_dump(b.config, sort_keys=False)
