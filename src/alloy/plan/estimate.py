"""Memory estimate of a plan, from shapes alone."""

from __future__ import annotations

from dataclasses import dataclass

from alloy.plan.executor import HOLD_BYTES, row_chunks
from alloy.plan.planner import MergePlan

# float32 working copies a method holds per input, beyond the inputs themselves (peak RSS of
# each method on a 2048x2048 tensor with two models and a base, rounded up)
_OVERHEAD = {
    "linear": 1.0,
    "passthrough": 0.0,
    "task_arithmetic": 2.0,
    "slerp": 2.0,
    "multislerp": 2.0,
    "ties": 3.5,
    "dare_ties": 3.0,
    "dare_linear": 2.0,
    "nuslerp": 2.0,
    "karcher": 1.0,
    "breadcrumbs": 3.0,
    "breadcrumbs_ties": 3.5,
    "della": 3.5,
    "della_linear": 3.0,
    "sce": 2.5,
    "model_stock": 1.5,
    "nearswap": 1.0,
    "arcee_fusion": 3.0,
    "ram": 1.5,
    "ramplus_tl": 2.5,
    # the SVD methods: factors, concatenated bases and LAPACK's divide-and-conquer workspace
    "tsv": 3.5,
    "iso_c": 3.0,
    "iso_cts": 4.0,
}
RUNTIME_BYTES = 350 * 1024**2  # interpreter, torch and bookkeeping, measured on CPU


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int
    largest_tensor: str
    working_set_bytes: int


def estimate_memory(plan: MergePlan) -> MemoryEstimate:
    """Peak memory of running ``plan``: the runtime, plus the worst tensor's working set.

    A tensor's working set is what the executor holds (`alloy.plan.executor`): its inputs as
    stored, for a whole tensor or one held for reduction passes, else one row chunk of them;
    the same again for the unit read ahead; and the method's float32 copies of one chunk (of
    the whole tensor when the method does not stream).
    """
    spec = plan.method
    factor = _OVERHEAD.get(spec.name, 3.0)
    worst, worst_name = 0, ""
    for job in plan.jobs:
        n = len(job.all_inputs)
        numel = job.info.numel
        raw = sum(plan.input_info(r).nbytes for r in job.all_inputs)
        streamed = spec.streams(job.embedding)
        chunks = row_chunks(job.info.shape) if spec.chunked(job.embedding) else None
        chunk = (
            numel
            if chunks is None
            else (chunks[0][1] - chunks[0][0]) * (numel // job.info.shape[0])
        )
        held = (
            raw
            if chunks is None or (streamed and spec.reduces and raw <= HOLD_BYTES)
            else (raw * chunk // max(numel, 1))
        )
        work = chunk * (n * 4 + factor * max(n, 1) * 4 + 4 + job.info.dtype.itemsize)
        need = int(2 * held + work)
        if need > worst:
            worst, worst_name = need, job.name
    return MemoryEstimate(worst + RUNTIME_BYTES, worst_name, worst)
