"""The public entry points: `merge`, `plan` and `evaluate_merge`."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from alloy.analysis.inventory import SourceRecord, record, write_sources
from alloy.config.document import random_seed_of
from alloy.config.load import load_config
from alloy.config.modelref import ModelRefSyntaxError, parse_model_ref
from alloy.config.schema import MergeConfig, ModelRef
from alloy.errors import AlloyError, EvaluationError, OutputError
from alloy.io.output import commit_output, discard, prepare_output
from alloy.io.sharding import parse_size
from alloy.io.writer import ShardedSafetensorsWriter
from alloy.plan.executor import Executor
from alloy.plan.planner import MergePlan, TensorJob, build_plan
from alloy.report.card import write_configs, write_model_card, write_tokenizer
from alloy.report.facts import task_vector_facts
from alloy.report.inventory import report_inventory
from alloy.report.record import build_report, merged_sources
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


def _config(config: ConfigLike) -> MergeConfig:
    return config if isinstance(config, MergeConfig) else load_config(config)


def _lora_base(value: str | None) -> ModelRef | None:
    if value is None:
        return None
    try:
        ref = parse_model_ref(value)
    except ModelRefSyntaxError as e:
        raise AlloyError(f"lora_base (--lora-base) {value!r}: {e}") from e
    if ref.lora is not None:
        raise AlloyError(
            f"lora_base (--lora-base) {value!r} must name a base model, not BASE+ADAPTER"
        )
    return ref


def plan(
    config: ConfigLike,
    *,
    out_shard_size: str | int = "5GB",
    strict: bool = False,
    allow_crimes: bool = False,
    lora_base: str | None = None,
) -> MergePlan:
    """Plan a merge from headers only. Call ``.close()`` on the result when done.

    ``lora_base`` is the base model of every input that is a bare LoRA adapter directory
    (default: the adapter's ``base_model_name_or_path``)."""
    return build_plan(
        _config(config),
        out_shard_size=parse_size(out_shard_size),
        strict=strict,
        allow_crimes=allow_crimes,
        lora_base=_lora_base(lora_base),
    )


def _check_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise AlloyError("--device cuda was asked for, but torch sees no CUDA device.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise AlloyError("--device mps was asked for, but torch sees no MPS device.")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise AlloyError(f"unknown device {device!r}: use cpu, cuda or mps.")
    return device


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
    device = _check_device(device)
    sets = _eval_sets(eval_data, eval_probes)
    if sets is not None and not copy_tokenizer:
        raise EvaluationError(
            "evaluating the merge needs its tokenizer: drop --no-copy-tokenizer, or merge "
            "first and evaluate with `alloy eval` after adding tokenizer files."
        )
    the_plan = plan(
        config,
        out_shard_size=out_shard_size,
        strict=strict,
        allow_crimes=allow_crimes,
        lora_base=lora_base,
    )
    out = Path(out)
    eval_error: str | None = None
    try:
        if random_seed is None:  # a re-merge of alloy_config.yml: the seed it recorded
            random_seed = random_seed_of(the_plan.config.raw, the_plan.config.source_file)
        tmp = prepare_output(out, force, [p for m in the_plan.models.values() for p in m.paths])
        try:
            writer = ShardedSafetensorsWriter(tmp, the_plan.shard_layout())
            bar = _progress_bar(the_plan, progress)
            on_tensor = None
            if bar is not None:
                b = bar

                def on_tensor(job: TensorJob) -> None:
                    b.update(job.info.nbytes)
                    b.set_postfix_str(f"{b.n_tensors + 1}/{len(the_plan.jobs)} tensors")
                    b.n_tensors += 1

            try:
                Executor(
                    the_plan, writer, device=device, seed=random_seed or 0, on_tensor=on_tensor
                ).run()
            finally:
                writer.abort()
                if bar is not None:
                    bar.close()
            write_configs(the_plan, tmp, random_seed)
            if copy_tokenizer:
                write_tokenizer(the_plan, tmp)
            write_model_card(the_plan, tmp, out.name)
            run = {
                "merge_seconds": time.perf_counter() - started,
                "peak_rss_merge_bytes": peak_rss_bytes(),
                "device": device,
            }
            evaluation = None
            if sets is not None:
                eval_started = time.perf_counter()
                evaluation, eval_error = _evaluate_tmp(
                    the_plan, tmp, out, sets, eval_options, device, progress
                )
                run["eval_seconds"] = time.perf_counter() - eval_started
            facts = task_vector_facts(the_plan)
            warnings = list(the_plan.notes)
            if eval_error is not None:
                warnings.append(f"evaluation failed: {eval_error}")
            run["wall_seconds"] = time.perf_counter() - started
            run["peak_rss_bytes"] = peak_rss_bytes()
            records = source_records(the_plan)
            write_sources(records, tmp / "sources.json")
            report = build_report(
                the_plan,
                name=out.name,
                seed=random_seed,
                inventory=report_inventory(the_plan, records),
                facts=facts,
                evaluation=evaluation.to_dict() if evaluation is not None else None,
                warnings=warnings,
                run=run,
            )
            write_report(report, tmp)
            files = sorted(p.name for p in tmp.iterdir())
            commit_output(tmp, out)
        except BaseException:
            discard(tmp)
            raise
    except OSError as e:
        raise OutputError(f"writing {out} failed: {e}. Nothing was written.") from e
    finally:
        the_plan.close()
    if eval_error is not None:
        raise EvaluationError(
            f"the merge was written to {out}, but its evaluation failed: {eval_error} "
            f"Fix that and run `alloy eval {out} --data ... --write-report`."
        )
    return MergeResult(
        out_dir=out.resolve(),
        files=files,
        tensors=len(the_plan.jobs),
        bytes_written=the_plan.bytes_to_write,
        seconds=time.perf_counter() - started,
        method=the_plan.method.name,
        notes=list(the_plan.notes),
        evaluation=evaluation,
        report=report,
    )


def _eval_sets(data: Sequence[NamedFile], probes: Sequence[ProbeSpec]) -> EvalSets | None:
    """Parse and check the evaluation files (and that transformers imports) before merging."""
    if not data and not probes:
        return None
    from alloy.evaluate.models import transformers_module
    from alloy.evaluate.run import load_sets

    sets = load_sets(data, probes)
    transformers_module()
    return sets


def _evaluate_tmp(
    the_plan: MergePlan,
    tmp: Path,
    out: Path,
    sets: EvalSets,
    options: EvalOptions | None,
    device: str,
    progress: bool,
) -> tuple[Evaluation | None, str | None]:
    """Evaluate the finished merge in ``tmp`` against its sources; (evaluation, error)."""
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import evaluate_models

    options = options or EvalOptions(device=device, progress=progress)
    sources = [(str(r), the_plan.models[r].path) for r in merged_sources(the_plan)]
    label = out.name if out.name not in {s[0] for s in sources} else f"{out.name} (merged)"
    try:
        ev = evaluate_models((label, tmp), sources, sets, options, method=the_plan.method.name)
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
    from alloy.evaluate.run import evaluate_models, load_sets, sources_from_report

    merged = Path(merged)
    if sources is None:
        pairs, method = sources_from_report(merged)
    else:
        pairs = [(s[0], Path(s[1])) if isinstance(s, tuple) else (str(s), Path(s)) for s in sources]
        method = None
    return evaluate_models(
        (str(merged), merged), pairs, load_sets(data, probes), options, method=method
    )


def source_records(the_plan: MergePlan) -> list[SourceRecord]:
    """The inventory of a merge's inputs from their headers (no content hash: cheap)."""
    return [
        record(the_plan.models[ref], hash_weights=False) for ref in the_plan.config.all_models()
    ]


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
