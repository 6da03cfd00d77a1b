"""The report layer from a hand-made record: no plan, no checkpoint, no merge."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from alloy.analysis.inventory import SourceRecord
from alloy.config.load import load_config
from alloy.config.schema import ModelRef
from alloy.report.card import resolved_yaml, write_configs, write_model_card
from alloy.report.facts import task_vector_facts
from alloy.report.merge_record import MergeRecord, MergeSummary, ModelEntry, RunTimes
from alloy.report.record import build_report


def _summary(tmp_path: Path) -> MergeSummary:
    config = load_config(
        {
            "merge_method": "ties",
            "base_model": "base",
            "models": [
                {"model": "a", "parameters": {"weight": 1.0, "density": 0.5}},
                {"model": "b"},
            ],
            "parameters": {"weight": 0.5, "density": 0.5},
            "tokenizer_source": "c",
        }
    )
    d = tmp_path
    models = (
        ModelEntry(ModelRef("base"), d / "base", None, feeds=True),
        ModelEntry(ModelRef("a"), d / "a", None, feeds=True),
        ModelEntry(ModelRef("b"), d / "a", d / "lora", feeds=True),  # a's directory again
        ModelEntry(ModelRef("c"), d / "c", None, feeds=False),  # the tokenizer only
    )
    return MergeSummary(
        name="out",
        config=config,
        method="ties",
        paper="TIES-Merging (Yadav et al., 2023)",
        randomized=False,
        seed=None,
        models=models,
        donor=d / "base",
        tokenizer=d / "c",
        output_config={"model_type": "llama", "torch_dtype": "float32"},
        tensors=7,
        bytes_read=300,
        bytes_written=100,
        notes=("a note",),
    )


def _source(ref: str, path: Path) -> SourceRecord:
    return SourceRecord(
        ref, str(path), None, None, None, None, "llama", ["LlamaForCausalLM"], 10,
        {"float32": 10}, 2, 40, 1, "0123456789abcdef", 16, None, None, None, None,
    )  # fmt: skip


def test_the_report_comes_from_the_record(tmp_path: Path) -> None:
    summary = _summary(tmp_path)
    times = RunTimes("cpu", 1.0, 2, 3.0, 4)
    facts = task_vector_facts([], with_base=True, base="base")  # nothing measured
    record = MergeRecord(
        summary,
        tuple(_source(str(m.ref), m.path) for m in summary.models),
        facts,
        None,
        ("a note", "evaluation failed: x"),
        times,
    )
    report = build_report(record)
    merge = report["merge"]
    assert merge["method"] == "ties" and merge["tensors"] == 7 and merge["bytes_written"] == 100
    # the tokenizer-only model and a second reference to a's directory are not merged sources
    assert merge["models"] == [
        {"label": "base", "path": str(tmp_path / "base")},
        {"label": "a", "path": str(tmp_path / "a")},
    ]
    roles = {r["reference"]: r["role"] for r in report["inventory"]}
    assert roles == {"base": "base", "a": "input", "b": "input", "c": "tokenizer"}
    assert report["warnings"] == ["a note", "evaluation failed: x"]
    assert report["evaluation"] is None
    assert list(report["run"]) == [
        "merge_seconds",
        "peak_rss_merge_bytes",
        "device",
        "wall_seconds",
        "peak_rss_bytes",
    ]
    assert yaml.safe_load(merge["config_yaml"])["merge_method"] == "ties"
    assert report["rationale"]["facts"] == facts


def test_run_times_put_the_evaluation_before_the_wall_time() -> None:
    keys = list(RunTimes("cuda", 1.0, 2, 5.0, 6, eval_seconds=3.5).to_dict())
    assert keys[3:] == ["eval_seconds", "wall_seconds", "peak_rss_bytes"]


def test_files_beside_the_weights_come_from_the_summary(tmp_path: Path) -> None:
    summary = _summary(tmp_path / "models")
    out = tmp_path / "out"
    out.mkdir()
    write_configs(summary, out)
    write_model_card(summary, out)
    assert json.loads((out / "config.json").read_text()) == dict(summary.output_config)
    text = (out / "alloy_config.yml").read_text()
    assert f"# b -> {tmp_path / 'models' / 'a'} + adapter {tmp_path / 'models' / 'lora'}" in text
    assert text == resolved_yaml(summary)
    card = (out / "README.md").read_text()
    assert "# out" in card and "`ties` method (TIES-Merging" in card
    assert "## Notes\n\n- a note" in card and "with `base` as the base model" in card
