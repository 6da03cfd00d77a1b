"""Where trials run: in this process, in ``workers`` local processes, or as Ray tasks on the
actors of a Ray cluster. Each process (or actor) opens the models and builds the model once;
a trial is a config in, the merged model's values on the validation split out."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alloy.errors import AlloyError, UsageError
from alloy.evaluate.models import EvalOptions
from alloy.search.space import SearchSpace
from alloy.search.splits import Splits
from alloy.search.trial import TrialEvaluator, Values


@dataclass(frozen=True)
class Setup:
    """What a worker needs to build its `TrialEvaluator` (picklable)."""

    space: SearchSpace
    splits: Splits
    reference: str | None
    options: EvalOptions
    seed: int
    lora_base: str | None

    def evaluator(self) -> TrialEvaluator:
        return TrialEvaluator(
            self.space,
            self.splits,
            self.reference,
            self.options,
            seed=self.seed,
            lora_base=self.lora_base,
        )


def run_trial(evaluator: TrialEvaluator, config: Mapping[str, Any]) -> Values | str:
    """The trial's validation values, or the reason it failed (the search goes on)."""
    try:
        return evaluator.run(config, "validation")
    except AlloyError as e:
        return f"{type(e).__name__}: {e}"


_WORKER: TrialEvaluator | None = None


def _init_worker(setup: Setup) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)
    _WORKER = setup.evaluator()


def _worker_trial(config: Mapping[str, Any]) -> Values | str:
    assert _WORKER is not None
    return run_trial(_WORKER, config)


class Pool:
    """Runs trials: ``submit`` a config, get a future of its values."""

    def __init__(self, setup: Setup, local: TrialEvaluator, workers: int, ray: str | None):
        self.size = max(1, workers)
        self._local = local
        self._procs: cf.ProcessPoolExecutor | None = None
        self._actors: list[Any] = []
        self._free: list[int] = []
        self._busy: dict[cf.Future[Any], int] = {}
        if ray is not None:
            self._start_ray(setup, ray)
        elif self.size > 1:
            ctx = multiprocessing.get_context("spawn")
            self._procs = cf.ProcessPoolExecutor(
                self.size, mp_context=ctx, initializer=_init_worker, initargs=(setup,)
            )

    def _start_ray(self, setup: Setup, address: str) -> None:
        try:
            import ray
        except ImportError as e:
            raise UsageError(
                "--ray needs Ray: pip install 'alloy-merge[ray]' (or pip install ray)."
            ) from e
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)

        @ray.remote(num_cpus=1)
        class Actor:
            def __init__(self, setup: Setup) -> None:
                _init_worker(setup)

            def trial(self, config: Mapping[str, Any]) -> Values | str:
                return _worker_trial(config)

        self._actors = [Actor.remote(setup) for _ in range(self.size)]  # type: ignore[attr-defined]
        self._free = list(range(self.size))

    def submit(self, config: Mapping[str, Any]) -> cf.Future[Any]:
        if self._actors:
            i = self._free.pop()
            fut: cf.Future[Any] = self._actors[i].trial.remote(dict(config)).future()
            self._busy[fut] = i
            return fut
        if self._procs is not None:
            return self._procs.submit(_worker_trial, dict(config))
        done: cf.Future[Any] = cf.Future()
        done.set_result(run_trial(self._local, config))
        return done

    def release(self, fut: cf.Future[Any]) -> None:
        """``fut`` is done and read: its actor takes the next trial."""
        if fut in self._busy:
            self._free.append(self._busy.pop(fut))

    def close(self) -> None:
        if self._procs is not None:
            self._procs.shutdown(cancel_futures=True)
        if self._actors:
            import ray

            for a in self._actors:
                ray.kill(a)
