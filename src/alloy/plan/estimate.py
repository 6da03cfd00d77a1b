"""Memory estimate of a plan, from shapes alone."""

from __future__ import annotations

from dataclasses import dataclass

from alloy.plan.executor import UNITS_IN_FLIGHT, job_units, unit_spans
from alloy.plan.planner import MergePlan

RUNTIME_BYTES = 350 * 1024**2  # interpreter, torch and bookkeeping, measured on CPU


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int
    largest_tensor: str
    working_set_bytes: int


def estimate_memory(plan: MergePlan) -> MemoryEstimate:
    """Peak memory of running ``plan``: the runtime, plus the worst tensor's working set.

    A tensor's working set is what the executor holds for its units (`job_units`, the
    executor's own decision): its inputs as stored, for a whole tensor or one held for
    reduction passes, else one row chunk of them; the same again for each unit in flight
    besides it (the one whose passes are made, the one being read: `UNITS_IN_FLIGHT`); and
    the method's float32 copies (``MethodSpec.overhead`` per input) of one chunk, or of the
    whole tensor when it is not fed in chunks.
    """
    factor = plan.method.overhead
    worst, worst_name = 0, ""
    for job in plan.jobs:
        n = len(job.all_inputs)
        numel = job.info.numel
        raw = sum(plan.input_info(r).nbytes for r in job.all_inputs)
        first = job_units(plan, job)[0]
        rows = unit_spans(plan, first)[0]  # merged one span at a time
        chunk = numel if rows is None else (rows[1] - rows[0]) * (numel // job.info.shape[0])
        # the whole tensor's inputs, unless they come in chunks or are read again per pass
        held = raw if first.kind in ("held", "copy") else raw * chunk // max(numel, 1)
        work = chunk * (n * 4 + factor * max(n, 1) * 4 + 4 + job.info.dtype.itemsize)
        need = int(UNITS_IN_FLIGHT * held + work)
        if need > worst:
            worst, worst_name = need, job.name
    return MemoryEstimate(worst + RUNTIME_BYTES, worst_name, worst)
