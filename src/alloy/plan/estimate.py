"""Memory estimate of a plan, from shapes alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

from alloy.plan.executor import row_chunks
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
    worst, worst_name = 0, ""
    factor = _OVERHEAD.get(plan.method.name, 3.0)
    for job in plan.jobs:
        chunks = row_chunks(job.info.shape) if plan.method.elementwise else None
        numel = job.info.numel
        if chunks is not None:
            first = chunks[0]
            numel = (first[1] - first[0]) * math.prod(job.info.shape[1:])
        n = len(job.all_inputs)
        in_size = max((plan.input_info(r).dtype.itemsize for r in job.all_inputs), default=4)
        per_elem = n * (4 + in_size) + factor * max(n, 1) * 4 + 4 + job.info.dtype.itemsize
        need = int(numel * per_elem)
        if need > worst:
            worst, worst_name = need, job.name
    return MemoryEstimate(worst + RUNTIME_BYTES, worst_name, worst)
