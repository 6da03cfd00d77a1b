"""The record of one merge: what was planned, read, written and measured, as plain values.

`alloy.api.merge` builds a `MergeSummary` once the tensors are written (the files beside the
weights come from it) and the `MergeRecord` once everything is measured (report.json and
report.md come from that). Neither refers to the plan or to an open checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloy.analysis.inventory import SourceRecord
from alloy.config.schema import MergeConfig, ModelRef


@dataclass(frozen=True)
class ModelEntry:
    """One model the config references."""

    ref: ModelRef
    path: Path  # the (base) checkpoint directory: config.json, tokenizer
    adapter: Path | None  # the LoRA adapter applied on the fly, if any
    feeds: bool  # some merged tensor reads it (False: a tokenizer-only donor)


@dataclass(frozen=True)
class MergeSummary:
    """What was planned and written: the method that ran, the models, the output config."""

    name: str  # the output directory's name
    config: MergeConfig
    method: str
    paper: str
    randomized: bool
    seed: int | None
    models: tuple[ModelEntry, ...]  # in the config's order (`MergeConfig.all_models`)
    donor: Path  # the model config.json and generation_config.json come from
    tokenizer: Path  # the model the tokenizer files come from
    output_config: Mapping[str, Any]  # the merge's config.json
    tensors: int
    bytes_read: int
    bytes_written: int
    notes: tuple[str, ...]
    # an aligned vocabulary (`tokenizer:`): where each token's rows came from (report.json's
    # "tokenizer" section), and the output tokenizer's files when they are new
    vocabulary: Mapping[str, Any] | None = None
    tokenizer_files: Mapping[str, bytes] | None = None

    def entry(self, ref: ModelRef) -> ModelEntry:
        return next(m for m in self.models if m.ref == ref)

    def merged_models(self) -> list[ModelEntry]:
        """The models whose tensors feed the merge (not a tokenizer-only donor), in config
        order, one per checkpoint directory."""
        out: list[ModelEntry] = []
        paths: set[Path] = set()
        for m in self.models:
            if m.feeds and m.path not in paths:
                out.append(m)
                paths.add(m.path)
        return out


@dataclass(frozen=True)
class RunTimes:
    """What the run measured of itself."""

    device: str
    merge_seconds: float
    peak_rss_merge_bytes: int
    wall_seconds: float
    peak_rss_bytes: int
    eval_seconds: float | None = None  # when the merge ran with evaluation sets

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "merge_seconds": self.merge_seconds,
            "peak_rss_merge_bytes": self.peak_rss_merge_bytes,
            "device": self.device,
        }
        if self.eval_seconds is not None:
            out["eval_seconds"] = self.eval_seconds
        out["wall_seconds"] = self.wall_seconds
        out["peak_rss_bytes"] = self.peak_rss_bytes
        return out


@dataclass(frozen=True)
class MergeRecord:
    """Everything the report says about a merge."""

    summary: MergeSummary
    sources: tuple[SourceRecord, ...]  # the inventory of `summary.models`, in order
    facts: Mapping[str, Any]  # task-vector facts (`alloy.report.facts.task_vector_facts`)
    evaluation: Mapping[str, Any] | None  # `Evaluation.to_dict()`, when one ran
    warnings: tuple[str, ...]  # the plan's notes, and what went wrong after the merge
    run: RunTimes
    # the merged model's and the sources' distances from the base (`alloy.report.distance`)
    distance: Mapping[str, Any] | None = None
