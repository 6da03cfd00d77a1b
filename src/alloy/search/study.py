"""The Optuna study: stored in a journal file under the output directory, so a stopped
search resumes and several processes share one study; trials run here, in worker processes,
or as Ray tasks (`alloy.search.pool`)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloy.errors import UsageError
from alloy.search.score import Score
from alloy.search.space import Param, SearchSpace, draw

STUDY = "alloy-search"
JOURNAL = "study.journal"
SAMPLERS = ("tpe", "cmaes", "random")


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise UsageError(
            "alloy search needs Optuna: pip install 'alloy-merge[search]' (or pip install optuna)."
        ) from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _storage(optuna: Any, path: Path) -> Any:
    journal = optuna.storages.journal if hasattr(optuna.storages, "journal") else None
    if journal is not None and hasattr(journal, "JournalFileBackend"):
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path)))
    return optuna.storages.JournalStorage(optuna.storages.JournalFileStorage(str(path)))


def _constraint(trial: Any) -> list[float]:
    return [float(trial.user_attrs.get("violation", 0.0))]


def _sampler(optuna: Any, name: str, seed: int, multi: bool) -> Any:
    if name == "tpe":
        if hasattr(optuna.trial.Trial, "set_constraint"):  # Optuna 5: constraints on trials
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constraints_func=_constraint)
    if name == "cmaes":
        if multi:
            raise UsageError("sampler (--sampler) cmaes optimizes one objective; use tpe.")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UsageError(f"sampler (--sampler) {name!r}: use one of {', '.join(SAMPLERS)}.")


def open_study(
    out: Path, space: SearchSpace, n_objectives: int, sampler: str, seed: int, resume: bool
) -> Any:
    """The study in ``out/study.journal``: created, or (``resume``) loaded and checked to be
    a study of the same space."""
    optuna = optuna_module()
    path = out / JOURNAL
    if path.exists() and not resume:
        raise UsageError(
            f"{out} holds a search already ({JOURNAL}); pass --resume to continue it, or "
            "choose another output directory."
        )
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY,
        storage=_storage(optuna, path),
        load_if_exists=True,
        directions=["maximize"] * n_objectives,
        sampler=_sampler(optuna, sampler, seed, n_objectives > 1),
    )
    fingerprint = study.user_attrs.get("space")
    if fingerprint is None:
        study.set_user_attr("space", space.fingerprint())
    elif fingerprint != space.fingerprint():
        raise UsageError(
            f"{out}'s study searched another space (another config or ranges); resume it with "
            "the same config, or start a new search in another directory."
        )
    return study


def suggester(trial: Any) -> Callable[[Param], Any]:
    def suggest(p: Param) -> Any:
        if p.choices is not None:
            index = trial.suggest_categorical(p.name, list(range(len(p.choices))))
            return p.choices[index]
        assert p.low is not None and p.high is not None  # a range has both bounds
        if p.integer:
            step = int(p.step) if p.step else 1
            return trial.suggest_int(p.name, int(p.low), int(p.high), step=step, log=p.log)
        return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)

    return suggest


def enqueue(study: Any, space: SearchSpace, values: dict[str, Any]) -> None:
    """Queue ``values`` as the next trial (choices by their index, as they are suggested)."""
    params: dict[str, Any] = {}
    for name, v in values.items():
        p = space.param(name)
        if p is not None:
            params[name] = p.choices.index(v) if p.choices is not None else v
    study.enqueue_trial(params, skip_if_exists=True)


@dataclass
class Budget:
    trials: int
    timeout: float | None
    started: float

    def done(self, finished: int) -> bool:
        late = self.timeout is not None and time.perf_counter() - self.started >= self.timeout
        return finished >= self.trials or late


def finished_trials(study: Any) -> int:
    states = study.get_trials(deepcopy=False)
    return sum(1 for t in states if t.state.is_finished())


def ask(study: Any, space: SearchSpace) -> tuple[Any, dict[str, Any]]:
    trial = study.ask()
    return trial, draw(space, suggester(trial))


def tell(study: Any, trial: Any, result: Score | str, objective: str, skills: list[str]) -> None:
    """Record one trial: its score (values, feasibility, retentions) or its error."""
    optuna = optuna_module()
    if isinstance(result, str):
        trial.set_user_attr("error", result)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    trial.set_user_attr("violation", result.violation)
    if hasattr(trial, "set_constraint"):
        trial.set_constraint("degraded", result.violation)
    trial.set_user_attr("score", result.to_dict())
    values = [v if math.isfinite(v) else -1e9 for v in result.objectives(objective, skills)]
    study.tell(trial, values)
