"""The public entry points: `merge`, `plan`, `evaluate_merge`, `record_evaluation` and
`render_report` (the steps of `merge` are in `alloy._merging`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloy import _merging as steps
from alloy.config.document import random_seed_of
from alloy.config.load import load_config
from alloy.config.modelref import ModelRefSyntaxError, parse_model_ref
from alloy.config.schema import MergeConfig, ModelRef
from alloy.devices import check_device
from alloy.errors import EvaluationError, UsageError
from alloy.io.sharding import parse_size
from alloy.plan.models import OpenedModels, open_models_of
from alloy.plan.planner import MergePlan, build_plan

if TYPE_CHECKING:
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import Evaluation, NamedFile, ProbeSpec

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
    resumed_shards: int | None = None  # resume=True found an interrupted run: shards it kept
    shards: int = 1  # weight shards written


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


def _gguf_type(gguf: str | None) -> str | None:
    """``gguf`` as the GGUF type name written (F32, F16, BF16, Q8_0), checked before merging."""
    if gguf is None:
        return None
    from alloy.io.gguf.writer import TYPES

    if gguf.upper() not in TYPES:
        raise UsageError(f"gguf (--gguf) {gguf!r}: Alloy writes {', '.join(TYPES)}.")
    return gguf.upper()


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
    write_model_card: bool = True,
    gguf: str | None = None,
    resume: bool = False,
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

    ``write_model_card=False`` leaves out README.md; ``gguf`` (F32, F16, BF16 or Q8_0) also
    writes the merge as ``out/<name>.<TYPE>.gguf``. Both are part of the atomic output.

    ``resume=True`` continues a merge into ``out`` that was killed or interrupted, from the
    complete shards its temporary directory kept, if the config, the inputs, Alloy's version
    and the options that change bytes are the same (else `OutputError` says what differs);
    with nothing to resume it merges from the start. The bytes are those of an uninterrupted
    run (docs/safety.md).
    """
    started = time.perf_counter()
    device = check_device(device)
    sets = steps.eval_sets(eval_data, eval_probes, copy_tokenizer)
    cfg = _config(config, strict)
    if random_seed is None:  # a re-merge of alloy_config.yml: the seed it recorded
        random_seed = random_seed_of(cfg.raw, cfg.source_file)
    gguf_type = _gguf_type(gguf)
    shard_size = parse_size(out_shard_size)
    run = steps.Run(
        Path(out),
        device,
        random_seed,
        copy_tokenizer,
        progress,
        sets,
        eval_options,
        started,
        model_card=write_model_card,
        gguf=gguf_type,
        resume=resume,
        out_shard_size=shard_size,
    )
    with open_config_models(cfg, lora_base) as models:
        the_plan = build_plan(
            cfg, models, out_shard_size=shard_size, strict=strict, allow_crimes=allow_crimes
        )
        files, report, evaluation, eval_error, shards = steps.merge_into(
            the_plan, models, run, force
        )
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
        resumed_shards=len(shards.done) if shards.resumed else None,
        shards=len(the_plan.shards),
    )


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


def record_evaluation(merged: str | Path, evaluation: Evaluation) -> list[str]:
    """Put ``evaluation`` (of `evaluate_merge`, with the time it took) into the merge report in
    the directory ``merged`` and render the report again (as HTML too when it was), with the
    model card's evaluation table. Returns the names written."""
    from alloy.io.guard import guard_write
    from alloy.report.report import record_evaluation as record

    ev = evaluation.to_dict()
    sources = [Path(m["path"]) for m in ev["models"] if m["role"] != "merged"]
    guard_write(Path(merged), sources, "MERGED")  # the report goes there: never into a source
    return record(Path(merged), ev, evaluation.seconds)


def render_report(out: str | Path, *, html: bool = True) -> list[str]:
    """Render the merge report in the directory ``out`` again from its report.json:
    report.md, report.html (one self-contained page; not with ``html=False``), the PNG plots
    and the model card's evaluation table. Returns the names written."""
    from alloy.io.guard import guard_write
    from alloy.report.report import read_report, write_report

    out = Path(out)
    rep = read_report(out)
    guard_write(out, [Path(m["path"]) for m in rep["merge"]["models"]], "OUT")
    return write_report(rep, out, html=html)


# The entry points besides merging (check, inventory, analyze, recommend, the LoRA commands)
# are defined in `alloy.api_tools` and are part of this API.
from alloy.api_tools import analyze as analyze  # noqa: E402
from alloy.api_tools import check as check  # noqa: E402
from alloy.api_tools import inventory as inventory  # noqa: E402
from alloy.api_tools import lora_extract as lora_extract  # noqa: E402
from alloy.api_tools import lora_merge as lora_merge  # noqa: E402
from alloy.api_tools import recommend as recommend  # noqa: E402
