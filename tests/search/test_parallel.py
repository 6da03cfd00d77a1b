"""Trials in parallel: local worker processes, and Ray tasks on a local Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloy.api_search import search
from alloy.search.run import SearchOptions

from .search_family import Family, space_text


def _run(f: Family, tmp: Path, options: SearchOptions) -> dict[str, object]:
    space = tmp / "space.yml"
    space.write_text(space_text(f), encoding="utf-8")
    sets = [f"alpha={f.alpha_set}", f"beta={f.beta_set}"]
    result = search(space, tmp / "out", eval_data=sets, options=options)
    assert result.trials == options.trials
    record = json.loads((tmp / "out" / "trials.json").read_text())
    assert isinstance(record, dict)
    return record


@pytest.mark.slow
def test_two_worker_processes_run_the_trials(skill_family: Family, tmp_path: Path) -> None:
    options = SearchOptions(trials=4, workers=2, top=1, recommend=False)
    record = _run(skill_family, tmp_path, options)
    trials = record["trials"]
    assert isinstance(trials, list)
    assert all(t["validation"] is not None for t in trials)  # measured by the workers
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3]


@pytest.mark.slow
def test_trials_run_as_ray_tasks_on_a_local_cluster(skill_family: Family, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        options = SearchOptions(trials=3, workers=2, ray="auto", top=1, recommend=False)
        record = _run(skill_family, tmp_path, options)
    finally:
        ray.shutdown()
    trials = record["trials"]
    assert isinstance(trials, list)
    assert all(t["validation"] is not None for t in trials)
    assert record["best"] is not None
