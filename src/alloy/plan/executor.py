"""The streaming loop: for each planned tensor, read its inputs, merge, check, write.

Every tensor goes through a `StreamedMerge` (`alloy.methods.streamed.stream`): the method's
accelerator when it has one, else its function (`_FnStream`). How a tensor is fed follows the
method's one ``feeding`` field, decided here only (`job_units`, which the memory estimate asks
too): ``rows`` methods get the tensor in row chunks whose size depends only on its shape, so
memory is bounded by the chunk budget, not by the largest tensor, and results do not depend
on the machine; ``rows_after_passes`` methods get the whole tensor's inputs held in their
stored dtype (up to `HOLD_BYTES`; beyond, each pass reads the chunks again), sliced into the
same chunks; ``whole`` methods get the whole tensor at once.

Reading runs two units ahead on a background thread (a unit's safetensors inputs read side by
side on `READERS` threads); a second one makes the next tensor's
reduction passes (thresholds, angles) while this thread applies the current one; finished
chunks wait (at most two) to be written on a fourth (`alloy.plan.loop.read_prepare_ahead`;
`UNITS_IN_FLIGHT` units' inputs at most). Reading, reducing, applying and writing overlap, so
a cold disk's waits do not stall the passes (a TIES merge of three 7B models on a cold page
cache: 102-106 s against 115 s with the passes on the reading thread, bench/README.md).
Inputs are read in their stored dtype; the method converts (the fused CPU kernels convert
inside their loops).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Literal, NamedTuple

import torch

from alloy.config.schema import ModelRef
from alloy.errors import CheckpointError, MergeComputationError, ModelNotFoundError
from alloy.io.sources import SafetensorsCheckpoint, TensorSource
from alloy.io.writer import TensorWriter
from alloy.kernels import as_array, cpu_kernels_enabled, kernels_for
from alloy.methods.streamed.stream import Chunk, StreamedMerge, TensorContext, kernel_dtypes
from alloy.plan.loop import read_prepare_ahead
from alloy.plan.planner import InputRef, MergePlan, TensorJob
from alloy.plan.seeds import tensor_generator, tensor_seed
from alloy.plan.vocab_read import AlignedReader

# units whose inputs are in memory at once: applied, prepared (passes), read
UNITS_IN_FLIGHT = 3
READERS = 4  # threads reading one unit's inputs side by side
# float32 elements per input held at once by a chunked elementwise merge (16 MiB per input)
CHUNK_ELEMENTS = 4 * 1024 * 1024


def row_chunks(shape: tuple[int, ...], budget: int | None = None) -> list[tuple[int, int]] | None:
    """Row ranges covering a tensor in pieces of at most ``budget`` elements (default
    ``CHUNK_ELEMENTS``), or None when the tensor fits in one piece."""
    budget = CHUNK_ELEMENTS if budget is None else budget
    if len(shape) < 1 or math.prod(shape) <= budget:
        return None
    row = math.prod(shape[1:]) or 1
    rows_per = max(1, budget // row)
    return [(r, min(r + rows_per, shape[0])) for r in range(0, shape[0], rows_per)]


def row_spans(shape: tuple[int, ...]) -> list[tuple[int, int] | None]:
    """`row_chunks`, or ``[None]`` (the whole tensor) when it fits in one piece."""
    chunks = row_chunks(shape)
    return [None] if chunks is None else list(chunks)


def check_finite(name: str, tensor: torch.Tensor, kernels: bool = False) -> None:
    """Raise if ``tensor`` holds NaN or Inf. With ``kernels``, a CPU float32 or bfloat16 tensor
    is checked by one pass of the fused kernel; otherwise a single reduction decides the
    common case and the elementwise test runs only when the sum is not finite."""
    if kernels and tensor.device.type == "cpu" and kernel_dtypes([tensor]):
        from alloy.kernels.fused.merge import count_nonfinite

        bad = int(count_nonfinite(as_array(tensor)))
        if bad == 0:
            return
    else:
        if bool(torch.isfinite(tensor.sum())):
            return
        finite = torch.isfinite(tensor)
        if bool(finite.all()):  # the sum overflowed, the values are fine
            return
        bad = int((~finite).sum())
    raise MergeComputationError(
        f"the merged tensor {name!r} has {bad} NaN/Inf values out of {tensor.numel()}; "
        "check the inputs for NaN/Inf and the method's parameters (weights summing to "
        "zero, an extreme lambda). Nothing was written."
    )


class _BackgroundWriter:
    """Writes finished pieces on a thread, in order, at most ``depth`` pieces behind."""

    def __init__(self, writer: TensorWriter, depth: int = 2) -> None:
        self._writer = writer
        self._queue: queue.Queue[tuple[str, torch.Tensor, torch.dtype] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="alloy-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure
            name, data, dtype = item
            try:
                self._writer.add(name, data.to("cpu", dtype=dtype))
            except BaseException as e:  # re-raised on the merging thread
                self._error = e

    def put(self, name: str, data: torch.Tensor, dtype: torch.dtype) -> None:
        self.raise_if_failed()
        self._queue.put((name, data, dtype))

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> _BackgroundWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# Largest inputs (raw bytes, all inputs of one tensor) held in memory for a merge that makes
# reduction passes; a larger tensor is read again, chunk by chunk, for every pass.
HOLD_BYTES = 1 << 30

Kind = Literal["copy", "chunk", "held", "lazy"]


@dataclass(frozen=True)
class Unit:
    """One read of the executor: a tensor's rows (``chunk``), a whole tensor's inputs held for
    its passes (``held``; ``copy`` for integer buffers), or nothing read ahead (``lazy``)."""

    job: TensorJob
    kind: Kind
    rows: tuple[int, int] | None = None
    index: int = 0  # chunk index within the tensor
    last: bool = True  # the tensor's last unit


class Fetched(NamedTuple):
    """What the reader thread hands over: a unit's raw tensors, and for a held or lazy unit its
    merge, reduction passes made."""

    raw: list[torch.Tensor]
    stream: StreamedMerge | None


class _FnStream:
    """A method's function as a streamed merge without reduction passes: called on each chunk
    (``rows`` feeding) or once on the whole tensor."""

    def __init__(self, executor: Executor, job: TensorJob) -> None:
        self.fn = executor.plan.method.fn_for(job.embedding)
        self.job = job
        self.executor = executor

    def next_pass(self) -> bool:
        return False

    def observe(self, chunk: Chunk) -> None:  # pragma: no cover - never called
        raise AssertionError("a plain function makes no reduction pass")

    def apply(self, chunk: Chunk) -> torch.Tensor:
        ex, job = self.executor, self.job
        gen = (
            tensor_generator(ex.seed, job.name, ex.device, chunk.index)
            if ex.plan.method.randomized
            else None
        )
        return self.fn(chunk.inputs, chunk.base, job.params, job.model_params, gen)


def job_units(plan: MergePlan, job: TensorJob) -> list[Unit]:
    """The executor's reads for one job, from the method's ``feeding`` alone: a copy, the
    whole tensor held (``whole``, and ``rows_after_passes`` up to `HOLD_BYTES`; beyond, ``lazy``:
    read again for every pass), or its row chunks (``rows``)."""
    feeding = plan.method.feeding
    if job.copy_only:
        return [Unit(job, "copy")]
    if feeding == "whole":
        return [Unit(job, "held")]
    if feeding == "rows_after_passes":
        raw = sum(plan.input_info(r).nbytes for r in job.all_inputs)
        return [Unit(job, "held" if raw <= HOLD_BYTES else "lazy")]
    chunks = row_spans(job.info.shape)
    return [Unit(job, "chunk", rows, k, k == len(chunks) - 1) for k, rows in enumerate(chunks)]


def unit_spans(plan: MergePlan, unit: Unit) -> list[tuple[int, int] | None]:
    """The row ranges a unit is merged in (None: the whole tensor): a chunk's own rows; the row
    chunks of a tensor held or re-read for reduction passes; the whole tensor otherwise."""
    if unit.kind == "chunk":
        return [unit.rows]
    if unit.kind == "copy" or plan.method.feeding == "whole":
        return [None]
    return row_spans(unit.job.info.shape)


class Executor:
    """Runs ``plan``: reads each job's inputs from ``sources`` (one per model reference of the
    plan; the caller opens and closes them), merges, and hands the results to ``writer``
    (finished at the end). The jobs in ``skip`` are not run (a resumed merge wrote them)."""

    def __init__(
        self,
        plan: MergePlan,
        sources: Mapping[ModelRef, TensorSource],
        writer: TensorWriter,
        *,
        device: str = "cpu",
        seed: int = 0,
        on_tensor: Callable[[TensorJob], None] | None = None,
        skip: frozenset[int] = frozenset(),
        on_merged: Callable[[TensorJob, Chunk, torch.Tensor], None] | None = None,
    ) -> None:
        missing = {r.model for j in plan.jobs for r in j.all_inputs} - set(sources)
        if missing:
            raise ModelNotFoundError(
                "the executor was given no source for "
                + ", ".join(sorted(str(m) for m in missing))
                + "; pass one source per model reference of the plan"
            )
        self.plan = plan
        self.sources = sources
        self.writer = writer
        self._pool: ThreadPoolExecutor | None = None  # the readers, while `run` runs
        self.device = torch.device(device)
        self.seed = seed
        self.on_tensor = on_tensor
        self.skip = skip
        self.on_merged = on_merged  # each merged piece with its chunk, before it is written
        self.kernels = self.device.type == "cpu" and cpu_kernels_enabled()
        self.aligned = AlignedReader(sources)  # token-indexed tensors of an aligned vocabulary

    def units(self) -> Iterator[Unit]:
        for i in (i for shard in self.plan.shards for i in shard if i not in self.skip):
            yield from job_units(self.plan, self.plan.jobs[i])

    def _read(self, ref: InputRef, rows: tuple[int, int] | None) -> torch.Tensor:
        try:
            if ref.vocab is not None:
                return self.aligned.read(ref.vocab, rows)
            return self.sources[ref.model].get(ref.name, rows)
        except KeyError:
            raise CheckpointError(
                f"{ref.label}: {ref.model} has no tensor {ref.name!r}, which the plan read in "
                "its header; the checkpoint changed since it was planned: plan again."
            ) from None

    def _fetch(self, unit: Unit) -> list[torch.Tensor]:
        """Runs on the reader thread: the unit's raw tensors (inputs, then base) as stored
        (nothing for ``lazy``, whose passes read their chunks)."""
        job = unit.job
        if unit.kind == "copy":
            return [self._read(job.base or job.inputs[0], None)]
        if unit.kind == "lazy":
            return []
        refs = job.all_inputs
        if self._pool is not None and len(refs) > 1 and all(self._concurrent(r) for r in refs):
            reads = [self._pool.submit(self._read, r, unit.rows) for r in refs]
            return [f.result() for f in reads]
        return [self._read(r, unit.rows) for r in refs]

    def _concurrent(self, ref: InputRef) -> bool:
        """Whether ``ref`` is read from a safetensors checkpoint, whose positioned reads may
        run side by side (the disk serves several requests at once: three 7B inputs read
        1.4 GB/s one at a time, 1.8 GB/s together)."""
        return ref.vocab is None and isinstance(self.sources[ref.model], SafetensorsCheckpoint)

    def _prepare(self, unit: Unit, raw: list[torch.Tensor]) -> Fetched:
        """Runs on the preparing thread: for a held or lazy unit, its merge with the reduction
        passes made, so they overlap with the next unit's read and the previous one's apply
        and writes."""
        job = unit.job
        if unit.kind in ("copy", "chunk"):
            return Fetched(raw, None)
        stream = self._stream(job)
        while self._guarded(job, stream.next_pass):
            for chunk in self._held_chunks(unit, raw):
                self._guarded(job, partial(stream.observe, chunk))
        return Fetched(raw, stream)

    def _stream(self, job: TensorJob) -> StreamedMerge:
        factory = self.plan.method.accelerator
        if factory is None:
            return _FnStream(self, job)
        ctx = TensorContext(
            shape=job.info.shape,
            key=tensor_seed(self.seed, job.name),
            device=self.device,
            out_dtype=job.info.dtype,
            kernels=kernels_for(job.info.numel, self.kernels),
        )
        return factory(ctx, job.params, job.model_params)

    def _chunk(
        self, job: TensorJob, raw: list[torch.Tensor], rows: tuple[int, int] | None, index: int
    ) -> Chunk:
        start = 0 if rows is None else rows[0] * math.prod(job.info.shape[1:])
        n = len(job.inputs)
        return Chunk(raw[:n], raw[n] if job.base is not None else None, start, index, self.device)

    def _held_chunks(self, unit: Unit, raw: list[torch.Tensor]) -> Iterator[Chunk]:
        """The chunks of a ``held`` (sliced from memory) or ``lazy`` (read again) tensor."""
        job = unit.job
        for k, rows in enumerate(unit_spans(self.plan, unit)):
            if unit.kind == "lazy":
                part = [self._read(r, rows) for r in job.all_inputs]
            else:
                part = raw if rows is None else [t[rows[0] : rows[1]] for t in raw]
            yield self._chunk(job, part, rows, k)

    def _guarded(self, job: TensorJob, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except MergeComputationError as e:
            raise MergeComputationError(f"{job.name}: {e}") from e
        except RuntimeError as e:
            raise MergeComputationError(
                f"{self.plan.method.name} failed on {job.name} {list(job.info.shape)}: {e}"
            ) from e

    def _outputs(
        self, unit: Unit, raw: list[torch.Tensor], stream: StreamedMerge
    ) -> Iterator[tuple[Chunk, torch.Tensor]]:
        """The merged rows of one unit with their chunk (held and lazy units come with their
        passes made)."""
        job = unit.job
        if unit.kind == "chunk":
            chunk = self._chunk(job, raw, unit.rows, unit.index)
            yield chunk, self._guarded(job, partial(stream.apply, chunk))
            return
        for chunk in self._held_chunks(unit, raw):
            yield chunk, self._guarded(job, partial(stream.apply, chunk))

    def run(self) -> None:
        with ThreadPoolExecutor(READERS, thread_name_prefix="alloy-read") as pool:
            self._pool = pool
            try:
                self._run()
            finally:
                self._pool = None

    def _run(self) -> None:
        stream: StreamedMerge | None = None
        fetched = read_prepare_ahead(list(self.units()), self._fetch, self._prepare)
        with closing(fetched), _BackgroundWriter(self.writer) as out:
            for unit, (raw, prepared) in fetched:
                job = unit.job
                if unit.kind == "copy":
                    out.put(job.name, raw[0], job.info.dtype)
                else:
                    if unit.index == 0:
                        stream = prepared or self._stream(job)
                    assert stream is not None
                    for chunk, merged in self._outputs(unit, raw, stream):
                        check_finite(job.name, merged, kernels_for(merged.numel(), self.kernels))
                        if self.on_merged is not None:
                            self.on_merged(job, chunk, merged)
                        out.put(job.name, merged, job.info.dtype)
                        del chunk, merged
                del raw
                if unit.last:
                    stream = None
                    if self.on_tensor is not None:
                        self.on_tensor(job)
        out.raise_if_failed()
        self.writer.finish()
