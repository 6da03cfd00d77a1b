"""The public entry points: `merge`, `plan` and `evaluate_merge`."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloy.analysis.inventory import SourceRecord, record, write_sources
from alloy.config.load import load_config
from alloy.config.modelref import ModelRefSyntaxError, parse_model_ref
from alloy.config.schema import MergeConfig, ModelRef
from alloy.devices import check_device
from alloy.errors import AlloyError, EvaluationError, OutputError, UsageError
from alloy.io.output import commit_output, discard, prepare_output
from alloy.io.sharding import parse_size
from alloy.io.sources import TensorSource
from alloy.io.writer import ShardedSafetensorsWriter
from alloy.plan.executor import Executor
from alloy.plan.models import InputModel, OpenedModels, open_models_of
from alloy.plan.planner import MergePlan, TensorJob, build_plan
from alloy.report.card import write_configs, write_model_card, write_tokenizer
from alloy.report.facts import FactTensor, task_vector_facts
from alloy.report.merge_record import MergeRecord, MergeSummary, ModelEntry, RunTimes
from alloy.report.record import build_report
from alloy.report.report import peak_rss_bytes, write_report

if TYPE_CHECKING:
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import EvalSets, Evaluation, NamedFile, ProbeSpec

log = logging.getLogger("alloy")

ConfigLike = str | Path | Mapping[str, Any] | MergeConfig


@dataclass
class MergeResult:
    out_dir: Path
    files: list[str]
    tensors: int
    bytes_written: int
    seconds: float
    method: str
    notes: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = None  # when the merge ran with evaluation sets
    report: dict[str, Any] | None = None  # the content of report.json


def _config(config: ConfigLike, strict: bool = False) -> MergeConfig:
    return config if isinstance(config, MergeConfig) else load_config(config, strict=strict)


def _lora_base(value: str | None) -> ModelRef | None:
    if value is None:
        return None
    try:
        ref = parse_model_ref(value)
    except ModelRefSyntaxError as e:
        raise UsageError(f"lora_base (--lora-base) {value!r}: {e}") from e
    if ref.lora is not None:
        raise UsageError(
            f"lora_base (--lora-base) {value!r} must name a base model, not BASE+ADAPTER"
        )
    return ref


def open_config_models(config: MergeConfig, lora_base: str | None = None) -> OpenedModels:
    """Open every model ``config`` references (relative paths from the config's directory);
    close the result (it is a context manager)."""
    return open_models_of(config, _lora_base(lora_base))


def plan(
    config: ConfigLike,
    *,
    out_shard_size: str | int = "5GB",
    strict: bool = False,
    allow_crimes: bool = False,
    lora_base: str | None = None,
) -> MergePlan:
    """Plan a merge from headers only: the models are opened, read and closed again.

    ``lora_base`` is the base model of every input that is a bare LoRA adapter directory
    (default: the adapter's ``base_model_name_or_path``)."""
    cfg = _config(config, strict)
    with open_config_models(cfg, lora_base) as models:
        return build_plan(
            cfg,
            models,
            out_shard_size=parse_size(out_shard_size),
            strict=strict,
            allow_crimes=allow_crimes,
        )


@dataclass(frozen=True)
class _Run:
    """How `merge` runs, besides the plan: the caller's options."""

    out: Path
    device: str
    seed: int | None
    copy_tokenizer: bool
    progress: bool
    sets: EvalSets | None
    eval_options: EvalOptions | None
    started: float


def merge(
    config: ConfigLike,
    out: str | Path,
    *,
    device: str = "cpu",
    out_shard_size: str | int = "5GB",
    random_seed: int | None = None,
    copy_tokenizer: bool = True,
    allow_crimes: bool = False,
    force: bool = False,
    strict: bool = False,
    progress: bool = False,
    eval_data: Sequence[NamedFile] = (),
    eval_probes: Sequence[ProbeSpec] = (),
    eval_options: EvalOptions | None = None,
    lora_base: str | None = None,
) -> MergeResult:
    """Merge the models of ``config`` (a mergekit YAML path, a mapping, or a parsed config)
    into the Hugging Face model directory ``out``, with report.md and report.json.

    Inputs may be LoRA adapters: ``base+adapter`` references, or bare adapter directories whose
    base is ``lora_base`` or else their ``adapter_config.json``'s ``base_model_name_or_path``.
    Adapters are applied per tensor while merging; nothing is written besides ``out``.

    ``eval_data`` (``"name=file"`` specs) and ``eval_probes`` (``(kind, "name=file")``) evaluate
    the merged model against its sources before the output is committed; the files are
    validated before merging. If the evaluation itself fails, the merge is still committed (its
    report says why) and `EvaluationError` is raised.
    """
    started = time.perf_counter()
    device = check_device(device)
    sets = _eval_sets(eval_data, eval_probes, copy_tokenizer)
    run = _Run(
        Path(out), device, random_seed, copy_tokenizer, progress, sets, eval_options, started
    )
    cfg = _config(config, strict)
    with open_config_models(cfg, lora_base) as models:
        the_plan = build_plan(
            cfg,
            models,
            out_shard_size=parse_size(out_shard_size),
            strict=strict,
            allow_crimes=allow_crimes,
        )
        files, report, evaluation, eval_error = _merge_into(the_plan, models, run, force)
    if eval_error is not None:
        raise EvaluationError(
            f"the merge was written to {run.out}, but its evaluation failed: {eval_error} "
            f"Fix that and run `alloy eval {run.out} --data ... --write-report`."
        )
    return MergeResult(
        out_dir=run.out.resolve(),
        files=files,
        tensors=len(the_plan.jobs),
        bytes_written=the_plan.bytes_to_write,
        seconds=time.perf_counter() - started,
        method=the_plan.method.name,
        notes=list(the_plan.notes),
        evaluation=evaluation,
        report=report,
    )


def _merge_into(
    the_plan: MergePlan, models: OpenedModels, run: _Run, force: bool
) -> tuple[list[str], dict[str, Any], Evaluation | None, str | None]:
    """Write the merge into a temporary directory beside ``run.out`` and commit it there:
    the weights, the files beside them, sources.json and the report. (files, report.json's
    content, evaluation, its error)."""
    inputs = [p for m in the_plan.models.values() for p in m.paths]
    try:
        tmp = prepare_output(run.out, force, inputs)
        try:
            _execute(the_plan, models.sources(), tmp, run)
            summary = merge_summary(the_plan, run.out.name, run.seed)
            write_configs(summary, tmp)
            if run.copy_tokenizer:
                write_tokenizer(summary, tmp)
            write_model_card(summary, tmp)
            rec, evaluation, eval_error = _measure(the_plan, summary, models, tmp, run)
            write_sources(list(rec.sources), tmp / "sources.json")
            report = build_report(rec)
            write_report(report, tmp)
            files = sorted(p.name for p in tmp.iterdir())
            commit_output(tmp, run.out)
        except BaseException:
            discard(tmp)
            raise
    except OSError as e:
        raise OutputError(f"writing {run.out} failed: {e}. Nothing was written.") from e
    return files, report, evaluation, eval_error


def _execute(
    the_plan: MergePlan, sources: Mapping[ModelRef, TensorSource], tmp: Path, run: _Run
) -> None:
    """The tensors: ``the_plan`` run over ``sources`` into sharded safetensors in ``tmp``."""
    writer = ShardedSafetensorsWriter(tmp, the_plan.shard_layout())
    bar = _progress_bar(the_plan, run.progress)
    on_tensor = None
    if bar is not None:
        b = bar

        def on_tensor(job: TensorJob) -> None:
            b.update(job.info.nbytes)
            b.set_postfix_str(f"{b.n_tensors + 1}/{len(the_plan.jobs)} tensors")
            b.n_tensors += 1

    try:
        Executor(
            the_plan, sources, writer, device=run.device, seed=run.seed or 0, on_tensor=on_tensor
        ).run()
    finally:
        writer.abort()
        if bar is not None:
            bar.close()


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
    the_plan: MergePlan, summary: MergeSummary, models: OpenedModels, tmp: Path, run: _Run
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


def _eval_sets(
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


def _evaluate_tmp(
    summary: MergeSummary, tmp: Path, run: _Run
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


def evaluate_merge(
    merged: str | Path,
    sources: Sequence[str | Path | tuple[str, str | Path]] | None = None,
    *,
    data: Sequence[NamedFile] = (),
    probes: Sequence[ProbeSpec] = (),
    options: EvalOptions | None = None,
) -> Evaluation:
    """Evaluate ``merged`` and its ``sources`` (paths, or (label, path); by default the
    sources recorded in ``merged``'s report.json) on the data sets (perplexity) and probes."""
    from alloy.api_tools import sources_from_report
    from alloy.evaluate.run import evaluate_models, load_sets

    merged = Path(merged)
    if sources is None:
        pairs, method = sources_from_report(merged)
    else:
        pairs = [(s[0], Path(s[1])) if isinstance(s, tuple) else (str(s), Path(s)) for s in sources]
        method = None
    return evaluate_models(
        (str(merged), merged), pairs, load_sets(data, probes), options, method=method
    )


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


# The entry points besides merging (check, inventory, analyze, recommend, the LoRA commands)
# are defined in `alloy.api_tools` and are part of this API.
from alloy.api_tools import analyze as analyze  # noqa: E402
from alloy.api_tools import check as check  # noqa: E402
from alloy.api_tools import inventory as inventory  # noqa: E402
from alloy.api_tools import lora_extract as lora_extract  # noqa: E402
from alloy.api_tools import lora_merge as lora_merge  # noqa: E402
from alloy.api_tools import recommend as recommend  # noqa: E402
