"""The steps of `alloy.api.merge` once the plan is built: run it into a temporary directory,
write the files beside the weights, evaluate (when asked), record the merge, commit.

Private to `alloy.api`: `merge` is the entry point. One tensor's way is
`merge_into` -> `_execute` (`alloy.plan.executor.Executor` over the sources, into
`alloy.io.writer.ShardedSafetensorsWriter`); the report is built from one `MergeRecord`
(`_measure`), never from the plan. Every run records the resume manifest of its temporary
(`_shards`, `alloy.io.resume`); ``Run.resume`` continues an interrupted run's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloy._version import __version__
from alloy.analysis.inventory import SourceRecord, record, write_sources
from alloy.config.schema import ModelRef
from alloy.errors import AlloyError, EvaluationError, OutputError
from alloy.io import resume as resuming
from alloy.io.output import commit_output, discard, prepare_output, release
from alloy.io.sharding import shard_file_names
from alloy.io.sources import TensorSource
from alloy.io.writer import ShardedSafetensorsWriter
from alloy.kernels import cpu_kernels_enabled
from alloy.plan.executor import Executor
from alloy.plan.models import InputModel, OpenedModels
from alloy.plan.planner import InputRef, MergePlan, TensorJob
from alloy.plan.vocab_read import AlignedReader
from alloy.report.card import write_configs, write_model_card, write_tokenizer
from alloy.report.distance import DistanceObserver
from alloy.report.facts import FactTensor, task_vector_facts
from alloy.report.merge_record import MergeRecord, MergeSummary, ModelEntry, RunTimes
from alloy.report.record import build_report
from alloy.report.report import peak_rss_bytes, write_report

if TYPE_CHECKING:
    import torch

    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import EvalSets, Evaluation, NamedFile, ProbeSpec

log = logging.getLogger("alloy")
RESUME_HINT = "alloy_resume_hint"  # set on a KeyboardInterrupt that left shards to resume


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
    resume: bool = False  # continue an interrupted run's temporary (alloy.io.resume)
    out_shard_size: int | None = None  # as asked (the plan's shards follow from it)


@dataclass(frozen=True)
class Shards:
    """This run's resume manifest, and the shards it took complete from an interrupted run."""

    manifest: resuming.Manifest
    done: frozenset[int] = frozenset()  # shard indices
    resumed: bool = False  # the temporary was an interrupted run's

    def note(self, total: int) -> str:
        return (
            f"resumed an interrupted merge: {len(self.done)} of {total} shards were complete "
            "(verified by size and XXH3-128 digest) and kept; the rest were merged in this run"
        )


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
) -> tuple[list[str], dict[str, Any], Evaluation | None, str | None, Shards]:
    """Write the merge into a temporary directory beside ``run.out`` and commit it there:
    the weights, the files beside them, sources.json and the report. (files, report.json's
    content, evaluation, its error, the shards resumed)."""
    inputs = [p for m in the_plan.models.values() for p in m.paths]
    try:
        tmp = prepare_output(run.out, force, inputs, resume=run.resume)
        shards = _shards(the_plan, tmp, run)
        try:
            distance = _execute(the_plan, models.sources(), tmp, run, shards)
            summary = merge_summary(the_plan, run.out.name, run.seed)
            write_configs(summary, tmp)
            if run.copy_tokenizer or summary.tokenizer_files is not None:
                write_tokenizer(summary, tmp)  # a new (aligned) vocabulary is always written
            if run.model_card:
                write_model_card(summary, tmp)
            rec, evaluation, eval_error = _measure(the_plan, summary, models, tmp, run, shards)
            rec = replace(rec, distance=distance)
            write_sources(list(rec.sources), tmp / "sources.json")
            report = build_report(rec)
            write_report(report, tmp)
            if run.gguf is not None:  # inside the output, so its marker lists it
                from alloy.io.gguf.writer import write_gguf

                write_gguf(tmp, tmp / f"{run.out.name}.{run.gguf}.gguf", run.gguf)
            files = sorted(p.name for p in tmp.iterdir() if p.name != resuming.MANIFEST)
            resuming.pause_point("before-swap")  # tests: everything written, not moved
            commit_output(tmp, run.out)
        except BaseException as e:
            _abandon(tmp, shards, e, len(the_plan.shards))
            raise
    except OSError as e:
        raise OutputError(f"writing {run.out} failed: {e}. Nothing was written.") from e
    return files, report, evaluation, eval_error, shards


def resume_key(the_plan: MergePlan, run: Run) -> dict[str, Any]:
    """What decides the bytes of the shards: a resumed run must have the same (alloy.io.resume)."""
    import torch

    randomized = the_plan.method.randomized
    return {
        "alloy": __version__,
        "torch": torch.__version__,
        "config": resuming.digest(the_plan.config.raw),
        "plan": resuming.digest(repr((the_plan.method.name, the_plan.jobs, the_plan.shards))),
        "options": {
            "out_shard_size": run.out_shard_size,
            "device": run.device,
            "seed": (run.seed or 0) if randomized else None,
            "kernels": run.device == "cpu" and cpu_kernels_enabled(),
        },
        "inputs": resuming.fingerprint_inputs(p for m in the_plan.models.values() for p in m.paths),
    }


def _shards(the_plan: MergePlan, tmp: Path, run: Run) -> Shards:
    """Start this run's manifest in ``tmp``, or (``run.resume`` and ``tmp`` an interrupted
    run's) check it and keep its complete shards; the temporary is kept when that fails."""
    resumed = run.resume and resuming.has_manifest(tmp)
    try:
        key = resume_key(the_plan, run)
        if not resumed:
            if run.resume:
                log.warning(
                    "nothing to resume for %s (no interrupted run of it was found): starting "
                    "a new merge",
                    run.out,
                )
            return Shards(resuming.start(tmp, key))
        names = shard_file_names(len(the_plan.shards))
        manifest, rejected = resuming.resume(tmp, key, names, run.out)
    except BaseException:
        (release if resumed else discard)(tmp)
        raise
    for name in rejected:
        log.warning("%s: %s is not what was written; it is merged again", tmp.name, name)
    done = frozenset(i for i, n in enumerate(names) if n in manifest.complete)
    log.info("resuming %s from %s: %d of %d shards kept", run.out, tmp.name, len(done), len(names))
    return Shards(manifest, done, resumed=True)


def _abandon(tmp: Path, shards: Shards, e: BaseException, total: int) -> None:
    """A run that failed: its temporary is removed, unless it was interrupted (Ctrl-C, SIGTERM,
    SIGHUP) with complete shards: those are kept for ``--resume`` (``e`` says where, in `RESUME_HINT`)."""
    complete = len(shards.manifest.complete)
    if not isinstance(e, KeyboardInterrupt) or complete == 0:
        discard(tmp)
        return
    release(tmp)
    setattr(  # read by the CLI (BaseException.add_note is Python 3.11+)
        e,
        RESUME_HINT,
        f"{complete} of {total} shards are complete in {tmp}: run the same command with "
        "--resume to continue from them (a run without --resume starts over and removes them).",
    )


def _execute(
    the_plan: MergePlan,
    sources: Mapping[ModelRef, TensorSource],
    tmp: Path,
    run: Run,
    shards: Shards,
) -> dict[str, Any] | None:
    """The tensors: ``the_plan`` run over ``sources`` into sharded safetensors in ``tmp``, but
    the shards ``shards.done`` (each shard completed is recorded in ``shards.manifest``); the
    merged model's distance from the base, measured on the way (`report.distance`: on a resumed
    merge, over the tensors merged after the resume)."""
    manifest = shards.manifest
    writer = ShardedSafetensorsWriter(
        tmp,
        the_plan.shard_layout(),
        done=shards.done,
        on_shard=lambda _, name, size, digest: manifest.add(name, size, digest),
    )
    skip = frozenset(j for i in shards.done for j in the_plan.shards[i])
    bar = _progress_bar(the_plan, run.progress)
    on_tensor = None
    if bar is not None:
        b = bar

        def on_tensor(job: TensorJob) -> None:
            b.update(job.info.nbytes)
            b.set_postfix_str(f"{b.n_tensors + 1}/{len(the_plan.jobs)} tensors")
            b.n_tensors += 1

        b.update(sum(the_plan.jobs[j].info.nbytes for j in skip))
        b.n_tensors = len(skip)

    observer = DistanceObserver(cpu_kernels_enabled())
    try:
        Executor(
            the_plan,
            sources,
            writer,
            device=run.device,
            seed=run.seed or 0,
            on_tensor=on_tensor,
            skip=skip,
            on_merged=observer,
        ).run()
    finally:
        writer.abort()
        if bar is not None:
            bar.close()
    base = the_plan.config.base_model
    distance = observer.result(str(base) if base is not None else None)
    if distance is not None and skip:  # the shards of the interrupted run were not re-read
        distance["resumed"] = {"tensors_not_measured": len(skip)}
    return distance


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
        vocabulary=the_plan.vocab.provenance if the_plan.vocab is not None else None,
        tokenizer_files=the_plan.vocab.files if the_plan.vocab is not None else None,
    )


def _measure(
    the_plan: MergePlan,
    summary: MergeSummary,
    models: OpenedModels,
    tmp: Path,
    run: Run,
    shards: Shards,
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
    if shards.resumed:
        warnings.append(shards.note(len(the_plan.shards)))
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
    aligned = AlignedReader(sources)
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
                tuple(_reader(sources, aligned, r) for r in job.inputs),
                _reader(sources, aligned, base) if base is not None else None,
            )
        )
    base_model = the_plan.config.base_model
    return task_vector_facts(
        tensors, with_base=with_base, base=str(base_model) if base_model is not None else None
    )


def _reader(
    sources: Mapping[ModelRef, TensorSource], aligned: AlignedReader, ref: InputRef
) -> Callable[..., torch.Tensor]:
    """How to read input ``ref`` (through its `RowMap` when its vocabulary is aligned)."""
    if ref.vocab is not None:
        return partial(aligned.read, ref.vocab)
    return partial(sources[ref.model].get, ref.name)


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
