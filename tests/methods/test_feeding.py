"""`feeding` is the one field the executor reads to decide how a tensor is fed, and the memory
estimate asks the executor (`job_units`, `unit_spans`) instead of keeping its own rules."""

from __future__ import annotations

from typing import Any

import pytest
from checkpoints import ModelSet

import alloy
from alloy.plan import estimate, executor

PARAMS: dict[str, dict[str, Any]] = {
    "linear": {"weight": 1.0},
    "ties": {"weight": 1.0, "density": 0.5},
    "della": {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
}
KINDS = {"linear": {"chunk"}, "ties": {"held"}, "della": {"held"}}


def config(models: ModelSet, name: str) -> dict[str, Any]:
    return {
        "merge_method": name,
        "base_model": str(models.base),
        "models": [
            {"model": str(models.ft1), "parameters": PARAMS[name]},
            {"model": str(models.ft2), "parameters": PARAMS[name]},
        ],
    }


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_units_follow_the_feeding(
    llama_models: ModelSet, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = alloy.plan(config(llama_models, name))
    merged = [j for j in plan.jobs if not j.copy_only]
    assert {executor.job_units(plan, j)[0].kind for j in merged} == KINDS[name]
    # small tensors fit one chunk; with a tiny chunk budget a rows method gets several
    # chunk units and a rows_after_passes method keeps one held unit sliced into spans
    monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 64)
    job = max(merged, key=lambda j: j.info.numel)
    units = executor.job_units(plan, job)
    spans = executor.unit_spans(plan, units[0])
    feeding = plan.method.feeding
    if feeding == "rows":
        assert len(units) > 1 and all(u.kind == "chunk" for u in units)
        assert [u.last for u in units] == [False] * (len(units) - 1) + [True]
    elif feeding == "rows_after_passes":
        assert [u.kind for u in units] == ["held"] and len(spans) > 1
    else:
        assert [u.kind for u in units] == ["held"] and spans == [None]


def test_the_estimate_asks_the_executor(
    llama_models: ModelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = alloy.plan(config(llama_models, "linear"))
    whole = estimate.estimate_memory(plan).working_set_bytes
    asked: list[str] = []
    job_units = executor.job_units

    def spy(plan_: Any, job: Any) -> list[executor.Unit]:
        asked.append(job.name)
        return job_units(plan_, job)

    monkeypatch.setattr(estimate, "job_units", spy)
    monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 64)  # row chunks of 64 elements
    chunked = estimate.estimate_memory(plan).working_set_bytes
    assert sorted(asked) == sorted(j.name for j in plan.jobs)
    assert chunked < whole  # one chunk of the largest tensor instead of all of it
