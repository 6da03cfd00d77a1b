"""The steps of `alloy.api.merge` once the plan is built: run it into a temporary directory,
write the files beside the weights, evaluate (when asked), record the merge, commit.

Private to `alloy.api`: `merge` is the entry point. One tensor's way is
`merge_into` -> `_execute` (`alloy.plan.executor.Executor` over the sources, into
`alloy.io.writer.ShardedSafetensorsWriter`); the report is built from one `MergeRecord`
(`_measure`), never from the plan.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloy.analysis.inventory import SourceRecord, record, write_sources
from alloy.config.schema import ModelRef
from alloy.errors import AlloyError, EvaluationError, OutputError
from alloy.io.output import commit_output, discard, prepare_output
from alloy.io.sources import TensorSource
from alloy.io.writer import ShardedSafetensorsWriter
from alloy.kernels import cpu_kernels_enabled
from alloy.plan.executor import Executor
from alloy.plan.models import InputModel, OpenedModels
from alloy.plan.planner import MergePlan, TensorJob
from alloy.report.card import write_configs, write_model_card, write_tokenizer
from alloy.report.distance import DistanceObserver
from alloy.report.facts import FactTensor, task_vector_facts
from alloy.report.merge_record import MergeRecord, MergeSummary, ModelEntry, RunTimes
from alloy.report.record import build_report
from alloy.report.report import peak_rss_bytes, write_report

if TYPE_CHECKING:
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import EvalSets, Evaluation, NamedFile, ProbeSpec


@dataclass(frozen=True)
class Run:
    """How `merge` runs, besides the plan: the caller's options."""

    out: Path
    device: str
    seed: int | None
    copy_tokenizer: bool
    progress: bool
    sets: EvalSets | None
    eval_options: EvalOptions | None
    started: float
    model_card: bool = True
    gguf: str | None = None  # also write OUT/OUT.<TYPE>.gguf


def eval_sets(
    data: Sequence[NamedFile], probes: Sequence[ProbeSpec], copy_tokenizer: bool
) -> EvalSets | None:
    """Parse and check the evaluation files (and that transformers imports) before merging."""
    if not data and not probes:
        return None
    if not copy_tokenizer:
        raise EvaluationError(
            "evaluating the merge needs its tokenizer: drop --no-copy-tokenizer, or merge "
            "first and evaluate with `alloy eval` after adding tokenizer files."
        )
    from alloy.evaluate.models import transformers_module
    from alloy.evaluate.run import load_sets

    sets = load_sets(data, probes)
    transformers_module()
    return sets


def merge_into(
    the_plan: MergePlan, models: OpenedModels, run: Run, force: bool
) -> tuple[list[str], dict[str, Any], Evaluation | None, str | None]:
    """Write the merge into a temporary directory beside ``run.out`` and commit it there:
    the weights, the files beside them, sources.json and the report. (files, report.json's
    content, evaluation, its error)."""
    inputs = [p for m in the_plan.models.values() for p in m.paths]
    try:
        tmp = prepare_output(run.out, force, inputs)
        try:
            distance = _execute(the_plan, models.sources(), tmp, run)
            summary = merge_summary(the_plan, run.out.name, run.seed)
            write_configs(summary, tmp)
            if run.copy_tokenizer:
                write_tokenizer(summary, tmp)
            if run.model_card:
                write_model_card(summary, tmp)
            rec, evaluation, eval_error = _measure(the_plan, summary, models, tmp, run)
            rec = replace(rec, distance=distance)
            write_sources(list(rec.sources), tmp / "sources.json")
            report = build_report(rec)
            write_report(report, tmp)
            if run.gguf is not None:  # inside the output, so its marker lists it
                from alloy.io.gguf.writer import write_gguf

                write_gguf(tmp, tmp / f"{run.out.name}.{run.gguf}.gguf", run.gguf)
            files = sorted(p.name for p in tmp.iterdir())
            commit_output(tmp, run.out)
        except BaseException:
            discard(tmp)
            raise
    except OSError as e:
        raise OutputError(f"writing {run.out} failed: {e}. Nothing was written.") from e
    return files, report, evaluation, eval_error


def _execute(
    the_plan: MergePlan, sources: Mapping[ModelRef, TensorSource], tmp: Path, run: Run
) -> dict[str, Any] | None:
    """The tensors: ``the_plan`` run over ``sources`` into sharded safetensors in ``tmp``;
    the merged model's distance from the base, measured on the way (`report.distance`)."""
    writer = ShardedSafetensorsWriter(tmp, the_plan.shard_layout())
    bar = _progress_bar(the_plan, run.progress)
    on_tensor = None
    if bar is not None:
        b = bar

        def on_tensor(job: TensorJob) -> None:
            b.update(job.info.nbytes)
            b.set_postfix_str(f"{b.n_tensors + 1}/{len(the_plan.jobs)} tensors")
            b.n_tensors += 1

    observer = DistanceObserver(cpu_kernels_enabled())
    try:
        Executor(
            the_plan,
            sources,
            writer,
            device=run.device,
            seed=run.seed or 0,
            on_tensor=on_tensor,
            on_merged=observer,
        ).run()
    finally:
        writer.abort()
        if bar is not None:
            bar.close()
    base = the_plan.config.base_model
    return observer.result(str(base) if base is not None else None)


def merge_summary(the_plan: MergePlan, name: str, seed: int | None) -> MergeSummary:
    """What ``the_plan`` merged into the directory called ``name``, as plain values."""
    config = the_plan.config
    feeding = {r.model for j in the_plan.jobs for r in j.all_inputs}
    models = tuple(
        ModelEntry(ref, m.path, m.adapter, ref in feeding) for ref, m in the_plan.models.items()
    )
    donor = the_plan.models[the_plan.donor].path
    tok = config.tokenizer_source
    return MergeSummary(
        name=name,
        config=config,
        method=the_plan.method.name,
        paper=the_plan.method.paper,
        randomized=the_plan.method.randomized,
        seed=seed,
        models=models,
        donor=donor,
        tokenizer=the_plan.models[tok].path if isinstance(tok, ModelRef) else donor,
        output_config=the_plan.output_config,
        tensors=len(the_plan.jobs),
        bytes_read=the_plan.bytes_to_read,
        bytes_written=the_plan.bytes_to_write,
        notes=the_plan.notes,
    )


def _measure(
    the_plan: MergePlan, summary: MergeSummary, models: OpenedModels, tmp: Path, run: Run
) -> tuple[MergeRecord, Evaluation | None, str | None]:
    """The record of the written merge: its evaluation (when asked), task-vector facts,
    warnings, timings and the inputs' inventory."""
    merge_seconds, rss_merge = time.perf_counter() - run.started, peak_rss_bytes()
    evaluation, eval_error, eval_seconds = None, None, None
    if run.sets is not None:
        eval_started = time.perf_counter()
        evaluation, eval_error = _evaluate_tmp(summary, tmp, run)
        eval_seconds = time.perf_counter() - eval_started
    facts = merge_facts(the_plan, models.sources())
    warnings = list(the_plan.notes)
    if eval_error is not None:
        warnings.append(f"evaluation failed: {eval_error}")
    times = RunTimes(
        device=run.device,
        merge_seconds=merge_seconds,
        peak_rss_merge_bytes=rss_merge,
        wall_seconds=time.perf_counter() - run.started,
        peak_rss_bytes=peak_rss_bytes(),
        eval_seconds=eval_seconds,
    )
    rec = MergeRecord(
        summary=summary,
        sources=tuple(source_records(models, the_plan.config.all_models())),
        facts=facts,
        evaluation=evaluation.to_dict() if evaluation is not None else None,
        warnings=tuple(warnings),
        run=times,
    )
    return rec, evaluation, eval_error


def merge_facts(the_plan: MergePlan, sources: Mapping[ModelRef, TensorSource]) -> dict[str, Any]:
    """The report's task-vector facts: every merged float tensor's inputs (against the base
    when the method uses one, else against their mean), read from ``sources`` in samples."""
    with_base = the_plan.method.base != "none" and any(j.base is not None for j in the_plan.jobs)
    tensors: list[FactTensor] = []
    for job in the_plan.jobs:
        if job.copy_only or not job.inputs or (with_base and job.base is None):
            continue
        if not with_base and len(job.inputs) < 2:
            continue  # passthrough: nothing to compare
        base = job.base if with_base else None
        tensors.append(
            FactTensor(
                job.name,
                job.info.shape,
                tuple(str(r.model) for r in job.inputs),
                tuple(partial(sources[r.model].get, r.name) for r in job.inputs),
                partial(sources[base.model].get, base.name) if base is not None else None,
            )
        )
    base_model = the_plan.config.base_model
    return task_vector_facts(
        tensors, with_base=with_base, base=str(base_model) if base_model is not None else None
    )


def _evaluate_tmp(
    summary: MergeSummary, tmp: Path, run: Run
) -> tuple[Evaluation | None, str | None]:
    """Evaluate the finished merge in ``tmp`` against its sources; (evaluation, error)."""
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import evaluate_models

    assert run.sets is not None
    options = run.eval_options or EvalOptions(device=run.device, progress=run.progress)
    sources = [(str(m.ref), m.path) for m in summary.merged_models()]
    out = run.out
    label = out.name if out.name not in {s[0] for s in sources} else f"{out.name} (merged)"
    try:
        ev = evaluate_models((label, tmp), sources, run.sets, options, method=summary.method)
    except AlloyError as e:
        return None, str(e)
    except Exception as e:  # a model that fails at run time must not cost the merge
        return None, f"{type(e).__name__}: {e}"
    final = out.expanduser().resolve()
    ev.models = [replace(m, path=final) if m.role == "merged" else m for m in ev.models]
    return ev, None


def source_records(
    models: Mapping[ModelRef, InputModel], refs: Sequence[ModelRef]
) -> list[SourceRecord]:
    """The inventory of a merge's inputs ``refs`` from their headers (no content hash: cheap)."""
    return [record(models[ref], hash_weights=False) for ref in refs]


def _progress_bar(the_plan: MergePlan, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(
        total=the_plan.bytes_to_write,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"alloy {the_plan.method.name}",
        dynamic_ncols=True,
    )
    bar.n_tensors = 0
    return bar
