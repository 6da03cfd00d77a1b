"""The streaming loop: for each planned tensor, read its inputs, merge, check, write.

Memory holds the inputs of the piece being merged plus those of the next one (read ahead on a
background thread) and at most two finished pieces waiting to be written (on another thread),
so reading, arithmetic and writing overlap while the working set stays bounded. For elementwise
methods (linear, task arithmetic, DARE, passthrough) large tensors are processed in row chunks
whose size depends only on the tensor's shape, so the working set is bounded by the chunk
budget rather than by the largest tensor, and results do not depend on the machine.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import torch

from alloy.errors import MergeComputationError
from alloy.io.writer import TensorWriter
from alloy.plan.planner import InputRef, MergePlan, TensorJob
from alloy.plan.seeds import tensor_generator

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


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` holds NaN or Inf. A single reduction decides the common case; the
    elementwise test runs only when the sum is not finite."""
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


@dataclass(frozen=True)
class Piece:
    """One call of the method: a whole tensor, or rows of it."""

    job: TensorJob
    index: int  # chunk index within the tensor
    rows: tuple[int, int] | None
    last: bool  # the tensor's last piece


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


class Executor:
    def __init__(
        self,
        plan: MergePlan,
        writer: TensorWriter,
        *,
        device: str = "cpu",
        seed: int = 0,
        on_tensor: Callable[[TensorJob], None] | None = None,
    ) -> None:
        self.plan = plan
        self.writer = writer
        self.device = torch.device(device)
        self.seed = seed
        self.on_tensor = on_tensor

    def pieces(self) -> Iterator[Piece]:
        elementwise = self.plan.method.elementwise
        for i in (i for shard in self.plan.shards for i in shard):
            job = self.plan.jobs[i]
            chunks = row_chunks(job.info.shape) if elementwise and not job.copy_only else None
            if chunks is None:
                yield Piece(job, 0, None, True)
            else:
                for k, rows in enumerate(chunks):
                    yield Piece(job, k, rows, k == len(chunks) - 1)

    def _read(self, ref: InputRef, rows: tuple[int, int] | None) -> torch.Tensor:
        return self.plan.models[ref.model].weights.get(ref.name, rows)

    def _load(self, piece: Piece) -> list[torch.Tensor]:
        """The piece's inputs, then its base, as float32 on the device (copies: raw dtype)."""
        job = piece.job
        if job.copy_only:
            return [self._read(job.base or job.inputs[0], None)]
        return [
            self._read(r, piece.rows).to(self.device, dtype=torch.float32) for r in job.all_inputs
        ]

    def _merge(self, piece: Piece, tensors: list[torch.Tensor]) -> torch.Tensor:
        job, method = piece.job, self.plan.method
        if job.copy_only:
            return tensors[0]
        inputs, base = tensors[: len(job.inputs)], None
        if job.base is not None:
            base = tensors[-1]
        gen = (
            tensor_generator(self.seed, job.name, self.device, piece.index)
            if method.randomized
            else None
        )
        try:
            fn = method.fn_for(job.embedding)
            out = fn(inputs, base, job.params, job.model_params, gen)
        except MergeComputationError as e:
            raise MergeComputationError(f"{job.name}: {e}") from e
        except RuntimeError as e:
            raise MergeComputationError(
                f"{method.name} failed on {job.name} {list(job.info.shape)}: {e}"
            ) from e
        check_finite(job.name, out)
        return out

    def run(self) -> None:
        pieces = list(self.pieces())
        with ThreadPoolExecutor(1, thread_name_prefix="alloy-reader") as reader:
            with _BackgroundWriter(self.writer) as out:
                ahead: Future[list[torch.Tensor]] | None = (
                    reader.submit(self._load, pieces[0]) if pieces else None
                )
                for k, piece in enumerate(pieces):
                    assert ahead is not None
                    tensors = ahead.result()
                    ahead = (
                        reader.submit(self._load, pieces[k + 1]) if k + 1 < len(pieces) else None
                    )
                    merged = self._merge(piece, tensors)
                    del tensors
                    out.put(piece.job.name, merged, piece.job.info.dtype)
                    del merged
                    if piece.last and self.on_tensor is not None:
                        self.on_tensor(piece.job)
            out.raise_if_failed()
        self.writer.finish()
