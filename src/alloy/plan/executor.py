"""The streaming loop: for each planned tensor, read its inputs, merge, check, write.

Memory holds one output tensor's inputs at a time. For elementwise methods (linear, task
arithmetic, DARE, passthrough) large tensors are processed in row chunks, so the working set
is bounded by the chunk budget rather than by the largest tensor (embeddings, the head).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from alloy.errors import MergeComputationError
from alloy.io.writer import TensorWriter
from alloy.methods.registry import MethodSpec
from alloy.plan.planner import InputRef, MergePlan, TensorJob
from alloy.plan.seeds import tensor_generator

# float32 elements per input held at once by a chunked elementwise merge (64 MiB per input)
CHUNK_ELEMENTS = 16 * 1024 * 1024


def row_chunks(
    shape: tuple[int, ...], budget: int = CHUNK_ELEMENTS
) -> list[tuple[int, int]] | None:
    """Row ranges covering a tensor in pieces of at most ``budget`` elements, or None when
    the tensor fits in one piece (or cannot be split by rows)."""
    if len(shape) < 1 or math.prod(shape) <= budget:
        return None
    row = math.prod(shape[1:]) or 1
    rows_per = max(1, budget // row)
    return [(r, min(r + rows_per, shape[0])) for r in range(0, shape[0], rows_per)]


def check_finite(name: str, tensor: torch.Tensor) -> None:
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise MergeComputationError(
            f"the merged tensor {name!r} has {bad} NaN/Inf values out of {tensor.numel()}; "
            "check the inputs for NaN/Inf and the method's parameters (weights summing to "
            "zero, an extreme lambda). Nothing was written."
        )


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

    def _read(self, ref: InputRef, rows: tuple[int, int] | None) -> torch.Tensor:
        t = self.plan.models[ref.model].weights.get(ref.name, rows)
        return t.to(self.device, dtype=torch.float32)

    def run(self) -> None:
        order = [i for shard in self.plan.shards for i in shard]
        for i in order:
            job = self.plan.jobs[i]
            self._run_job(job)
            if self.on_tensor is not None:
                self.on_tensor(job)
        self.writer.finish()

    def _pieces(
        self, job: TensorJob, method: MethodSpec
    ) -> Iterator[tuple[int, tuple[int, int] | None]]:
        chunks = row_chunks(job.info.shape) if method.elementwise else None
        if chunks is None:
            yield 0, None
        else:
            yield from enumerate(chunks)

    def _run_job(self, job: TensorJob) -> None:
        if job.copy_only:
            src = job.base or job.inputs[0]
            t = self.plan.models[src.model].weights.get(src.name)
            self.writer.add(job.name, t.to(job.info.dtype))
            return
        method = self.plan.method
        for chunk_index, rows in self._pieces(job, method):
            inputs = [self._read(r, rows) for r in job.inputs]
            base = self._read(job.base, rows) if job.base is not None else None
            gen = (
                tensor_generator(self.seed, job.name, self.device, chunk_index)
                if method.randomized
                else None
            )
            try:
                out = method.fn(inputs, base, job.params, job.model_params, gen)
            except MergeComputationError as e:
                raise MergeComputationError(f"{job.name}: {e}") from e
            except RuntimeError as e:
                raise MergeComputationError(
                    f"{method.name} failed on {job.name} {list(job.info.shape)}: {e}"
                ) from e
            del inputs, base
            check_finite(job.name, out)
            self.writer.add(job.name, out.to(job.info.dtype).cpu())
            del out
