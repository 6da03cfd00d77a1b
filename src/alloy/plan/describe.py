"""Human-readable views of a plan, for `alloy plan`."""

from __future__ import annotations

from typing import Any

from alloy.errors import UsageError, closest
from alloy.methods.registry import Params
from alloy.plan.estimate import estimate_memory
from alloy.plan.planner import MergePlan


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _params(p: Params | None) -> str:
    if p is None:
        return "-"
    values: dict[str, Any] = p.model_dump(by_alias=True)
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def describe_plan(plan: MergePlan) -> str:
    est = estimate_memory(plan)
    lines = [f"method: {plan.method.name}  ({plan.method.paper})"]
    if plan.method.name != plan.config.merge_method:
        lines[0] += f"  [config says {plan.config.merge_method}]"
    lines.append("models:")
    for ref, m in plan.models.items():
        where = f"{m.path} + adapter {m.adapter}" if m.adapter else str(m.path)
        lines.append(f"  {ref}  ->  {where}  ({m.tensors} tensors, {_gb(m.nbytes)})")
    lines += [
        f"output: {len(plan.jobs)} tensors in {len(plan.shards)} shard(s), "
        f"{_gb(plan.bytes_to_write)}",
        f"read: {_gb(plan.bytes_to_read)}   write: {_gb(plan.bytes_to_write)}",
        f"peak memory (estimate): {_gb(est.peak_bytes)}  (largest working set: "
        f"{est.largest_tensor}, {_gb(est.working_set_bytes)})",
    ]
    stack_key = [
        k for k in ("num_hidden_layers", "n_layer", "num_layers") if k in plan.output_config
    ]
    if stack_key:
        lines.append(f"layers: {plan.output_config[stack_key[0]]}")
    if plan.vocab is not None:  # the embedding and head rows aligned to one vocabulary
        v = plan.vocab
        lines.append(f"vocabulary: {v.source}, {v.tokens} tokens in {v.size} rows (aligned)")
    for n in plan.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def describe_tensor(plan: MergePlan, name: str) -> str:
    jobs = {j.name: j for j in plan.jobs}
    if name not in jobs:
        near = closest(name, list(jobs))
        raise UsageError(
            f"the merge writes no tensor {name!r}" + (f"; did you mean {near!r}?" if near else "")
        )
    job = jobs[name]
    shard = next(i for i, s in enumerate(plan.shards) if plan.jobs.index(job) in s)
    lines = [
        f"tensor: {job.name}  {list(job.info.shape)}  -> {str(job.info.dtype).removeprefix('torch.')}",
        f"shard: {shard + 1} of {len(plan.shards)}",
        f"layer position t: {job.t:.4g}",
        f"method: {plan.method.name}" + ("  (copied: not a float tensor)" if job.copy_only else ""),
        f"parameters: {_params(job.params)}",
        "inputs:",
    ]
    for ref, mp in zip(job.inputs, job.model_params or (None,) * len(job.inputs)):
        info = plan.input_info(ref)
        lines.append(
            f"  {ref.label}: {ref.model} :: {ref.name}  "
            f"{list(info.shape)} {str(info.dtype).removeprefix('torch.')}  [{_params(mp)}]"
        )
    if job.base is not None:
        info = plan.input_info(job.base)
        lines.append(
            f"base: {job.base.model} :: {job.base.name}  {list(info.shape)} "
            f"{str(info.dtype).removeprefix('torch.')}"
        )
    return "\n".join(lines)
