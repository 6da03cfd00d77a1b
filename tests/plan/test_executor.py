"""The executor alone: a plan value built by hand, in-memory sources and writer, no files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from alloy.config.load import load_config
from alloy.config.schema import ModelRef
from alloy.errors import CheckpointError, MergeComputationError, ModelNotFoundError
from alloy.io.sources import MemorySource, TensorInfo, TensorSource
from alloy.io.writer import MemoryWriter
from alloy.methods.registry import get_method
from alloy.plan import executor
from alloy.plan.executor import Executor
from alloy.plan.planner import InputRef, MergePlan, PlannedModel, TensorJob

A, B, BASE = ModelRef("a"), ModelRef("b"), ModelRef("base")


def _job(
    method: str,
    name: str,
    sources: dict[ModelRef, MemorySource],
    weights: list[float],
    *,
    base: bool,
    model_params: dict[str, float] | None = None,
    copy_only: bool = False,
) -> TensorJob:
    """A job of ``method`` reading ``name`` from a and b (and base), as the planner makes it."""
    spec = get_method(method)
    info = sources[A].info(name)
    inputs = tuple(InputRef(r, name, f"models[{i}]", info) for i, r in enumerate((A, B)))
    base_ref = InputRef(BASE, name, "base_model", sources[BASE].info(name)) if base else None
    if copy_only:
        return TensorJob(name, info, inputs, base_ref, None, (), 0.0, copy_only=True)
    extra = model_params or {}
    mparams = tuple(spec.model_params.model_validate({"weight": w, **extra}) for w in weights)
    return TensorJob(name, info, inputs, base_ref, spec.params.model_validate({}), mparams, 0.0)


def _plan(method: str, jobs: list[TensorJob], shards: list[list[int]]) -> MergePlan:
    config = load_config(
        {
            "merge_method": method,
            "base_model": "base",
            "models": [{"model": "a"}, {"model": "b"}],
        }
    )
    models = {r: PlannedModel(r, r.path, None, len(jobs), 0) for r in (A, B, BASE)}
    return MergePlan(
        config,
        get_method(method),
        models,
        tuple(jobs),
        tuple(tuple(s) for s in shards),
        {},
        BASE,
    )


def _run(plan: MergePlan, sources: dict[ModelRef, MemorySource]) -> MemoryWriter:
    writer = MemoryWriter([t for shard in plan.shard_layout() for t in shard])
    as_sources: dict[ModelRef, TensorSource] = dict(sources)
    Executor(plan, as_sources, writer).run()
    return writer


def _linear_sources() -> dict[ModelRef, MemorySource]:
    shapes = {"w1": (4, 3), "w2": (5,), "w3": (2, 2)}
    return {
        ref: MemorySource({n: torch.full(s, value) for n, s in shapes.items()})
        for ref, value in ((A, 2.0), (B, 6.0), (BASE, 0.0))
    }


def test_linear_jobs_over_several_shards_in_shard_order() -> None:
    sources = _linear_sources()
    jobs = [_job("linear", n, sources, [1.0, 3.0], base=False) for n in ("w1", "w2", "w3")]
    writer = _run(_plan("linear", jobs, [[1], [2, 0]]), sources)
    assert list(writer.tensors) == ["w2", "w3", "w1"]  # written shard by shard
    for name, t in writer.tensors.items():
        # (1·2 + 3·6) / (1 + 3) = 5, by hand
        assert t.shape == sources[A].info(name).shape
        assert torch.equal(t, torch.full(t.shape, 5.0))


def test_linear_in_row_chunks_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.arange(12.0).reshape(6, 2)
    b = 10 * torch.ones(6, 2)
    sources = {A: MemorySource({"w": a}), B: MemorySource({"w": b}), BASE: MemorySource({})}
    monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 4)  # two rows per chunk
    job = _job("linear", "w", sources, [1.0, 1.0], base=False)
    writer = _run(_plan("linear", [job], [[0]]), sources)
    assert len(writer._parts["w"]) == 3
    assert torch.equal(writer.tensors["w"], (a + b) / 2)


def test_ties_job_by_hand() -> None:
    base = torch.tensor([1.0, 1.0, 1.0, 1.0])
    sources = {
        BASE: MemorySource({"w": base}),
        A: MemorySource({"w": base + torch.tensor([1.0, -2.0, 3.0, 0.5])}),
        B: MemorySource({"w": base + torch.tensor([2.0, 1.5, -1.0, 0.5])}),
    }
    job = _job("ties", "w", sources, [1.0, 1.0], base=True, model_params={"density": 0.5})
    writer = _run(_plan("ties", [job], [[0]]), sources)
    # density 0.5 keeps the two largest |δ|: a → [0, -2, 3, 0], b → [2, 1.5, 0, 0]; the
    # elected signs of their sum [2, -0.5, 3, 0] are (+, −, +); each entry is the mean of the
    # agreeing kept deltas: [2, −2, 3, 0]
    expected = base + torch.tensor([2.0, -2.0, 3.0, 0.0])
    torch.testing.assert_close(writer.tensors["w"], expected)


def test_integer_buffers_are_copied_from_the_base() -> None:
    ids = torch.arange(5, dtype=torch.int64)
    sources = {r: MemorySource({"ids": ids + k}) for k, r in enumerate((A, B, BASE))}
    job = _job("linear", "ids", sources, [], base=True, copy_only=True)
    writer = _run(_plan("linear", [job], [[0]]), sources)
    assert torch.equal(writer.tensors["ids"], ids + 2)


def test_a_tensor_missing_from_its_source_is_named() -> None:
    sources = _linear_sources()
    jobs = [_job("linear", n, sources, [1.0, 1.0], base=False) for n in ("w1", "w2")]
    sources[B] = MemorySource({"w1": torch.zeros(4, 3)})  # w2 is gone since it was planned
    with pytest.raises(CheckpointError, match=r"models\[1\]: b has no tensor 'w2'"):
        _run(_plan("linear", jobs, [[0, 1]]), sources)


def test_a_model_without_a_source_is_refused_before_reading() -> None:
    sources = _linear_sources()
    job = _job("linear", "w1", sources, [1.0, 1.0], base=False)
    del sources[B]
    with pytest.raises(ModelNotFoundError, match="no source for b"):
        _run(_plan("linear", [job], [[0]]), sources)


def test_a_non_finite_result_names_the_tensor_and_writes_nothing() -> None:
    sources = _linear_sources()
    sources[A] = MemorySource({"w1": torch.full((4, 3), float("nan"))})
    job = _job("linear", "w1", sources, [1.0, 1.0], base=False)
    plan = _plan("linear", [job], [[0]])
    writer = MemoryWriter([t for shard in plan.shard_layout() for t in shard])
    with pytest.raises(MergeComputationError, match="'w1' has 12 NaN/Inf values"):
        Executor(plan, dict[ModelRef, TensorSource](sources), writer).run()
    assert writer.tensors == {}


def test_the_plan_is_a_value() -> None:
    sources = _linear_sources()
    plan = _plan("linear", [_job("linear", "w1", sources, [1.0, 1.0], base=False)], [[0]])
    with pytest.raises(AttributeError):
        plan.jobs = ()  # type: ignore[misc]
    assert not hasattr(plan, "close")
    assert plan.input_info(plan.jobs[0].inputs[0]) == TensorInfo((4, 3), torch.float32)
    assert plan.bytes_to_read == 2 * 12 * 4 and plan.bytes_to_write == 12 * 4


def test_a_units_safetensors_inputs_are_read_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    from alloy.io.sources import SafetensorsCheckpoint, open_weights

    values = {A: 2.0, B: 6.0, BASE: 0.0}
    sources: dict[ModelRef, TensorSource] = {}
    for ref, value in values.items():
        (tmp_path / ref.path).mkdir()
        save_file({"w": torch.full((4, 3), value)}, tmp_path / ref.path / "model.safetensors")
        sources[ref] = open_weights(tmp_path / ref.path)
    both = threading.Barrier(2, timeout=10)  # passes only when two reads are in flight at once
    read = SafetensorsCheckpoint.get

    def get(
        self: SafetensorsCheckpoint, name: str, rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        both.wait()
        return read(self, name, rows)

    monkeypatch.setattr(SafetensorsCheckpoint, "get", get)
    job = _job("linear", "w", sources, [1.0, 3.0], base=False)  # type: ignore[arg-type]
    plan = _plan("linear", [job], [[0]])
    writer = MemoryWriter([t for shard in plan.shard_layout() for t in shard])
    Executor(plan, sources, writer).run()
    assert torch.equal(writer.tensors["w"], torch.full((4, 3), 5.0))  # (1·2 + 3·6) / 4
    for s in sources.values():
        s.close()
