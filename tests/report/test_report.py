"""The merge report: every section, the evaluation's numbers, re-rendering, the CLI commands."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from checkpoints import ModelSet, load_state_dict, write_weights
from click.testing import CliRunner

import alloy
from alloy.cli import main
from alloy.evaluate.models import EvalOptions
from alloy.report.report import fmt

SECTIONS = [
    "## Merge Config",
    "## Source Model Inventory",
    "## Evaluation Comparison",
    "## Method Rationale",
    "## Warnings and Notes",
    "## Run",
]
OPTIONS = EvalOptions(max_length=16, stride=8, max_new_tokens=3)


def _words(seed: int, n: int) -> str:
    return " ".join(f"w{(seed * 31 + 7 * i) % 120}" for i in range(n))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evalfiles")
    (d / "persona.jsonl").write_text(
        "\n".join(json.dumps({"text": _words(s, 12)}) for s in range(3)) + "\n"
    )
    (d / "general.txt").write_text(_words(9, 40))
    (d / "voice.jsonl").write_text(
        json.dumps({"prompt": "w1 w2", "must_contain": ["w5"], "must_not_contain": ["w7"]}) + "\n"
    )
    return {p.stem: p for p in d.iterdir()}


def _ties(m: ModelSet) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(m.base),
        "models": [
            {"model": str(m.ft1), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(m.ft2), "parameters": {"weight": 1.0, "density": 0.5}},
        ],
    }


@pytest.fixture(scope="module")
def merged(
    llama_models: ModelSet, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> alloy.MergeResult:
    out = tmp_path_factory.mktemp("merged") / "combo"
    return alloy.merge(
        _ties(llama_models),
        out,
        eval_data=[f"persona={files['persona']}", str(files["general"])],
        eval_probes=[("contains", f"voice={files['voice']}")],
        eval_options=OPTIONS,
    )


def test_report_has_every_section(merged: alloy.MergeResult, llama_models: ModelSet) -> None:
    out = merged.out_dir
    md = (out / "report.md").read_text()
    positions = [md.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "![each model relative to the best source, per set](report-evaluation.png)" in md
    assert (out / "report-evaluation.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    assert yaml.safe_load(report["merge"]["config_yaml"]) == {
        **_ties(llama_models),
        "merge_method": "ties",
    }
    # the inventory: one row per model, parameter counts from the weights themselves
    inv = {r["reference"]: r for r in report["inventory"]}
    for path, role in ((llama_models.base, "base"), (llama_models.ft1, "input")):
        rec = inv[str(path)]
        state = load_state_dict(path)
        assert rec["role"] == role and rec["path"] == str(path.resolve())
        assert rec["parameters"] == sum(t.numel() for t in state.values())
        assert f"{rec['parameters']:,}" in md
    assert report["run"]["peak_rss_bytes"] >= report["run"]["peak_rss_merge_bytes"] > 0
    assert report["run"]["wall_seconds"] >= report["run"]["merge_seconds"] > 0
    assert "TIES trims each task vector" in md and "Sign conflict:" in md


def test_report_numbers_are_the_evaluations(
    merged: alloy.MergeResult, llama_models: ModelSet, files: dict[str, Path]
) -> None:
    out = merged.out_dir
    report = json.loads((out / "report.json").read_text())
    rows = {(r["set"], r["metric"]): r for r in report["evaluation"]["rows"]}
    assert set(rows) == {
        ("persona", "perplexity"),
        ("general", "perplexity"),
        ("voice", "pass"),
        ("voice", "phrases"),
    }
    # an independent evaluation of the same models gives the same numbers
    again = alloy.evaluate_merge(
        out,
        [(str(p), p) for p in (llama_models.base, llama_models.ft1, llama_models.ft2)],
        data=[f"persona={files['persona']}", str(files["general"])],
        probes=[("contains", f"voice={files['voice']}")],
        options=OPTIONS,
    )
    for r in again.rows:
        recorded = rows[(r.set, r.metric)]["values"]
        assert list(recorded.values()) == list(r.values.values())
    # persona's documents fit one window: a plain forward pass gives the same perplexity
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    nll, n = 0.0, 0
    for line in files["persona"].read_text().splitlines():
        ids = [int(w[1:]) + 4 for w in json.loads(line)["text"].split()]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
        nll -= float(logp.gather(1, torch.tensor(ids[1:])[:, None]).sum())
        n += len(ids) - 1
    assert rows[("persona", "perplexity")]["values"]["combo"] == pytest.approx(
        math.exp(nll / n), rel=1e-6
    )
    # the Markdown report and the model card show those numbers
    md, card = (out / "report.md").read_text(), (out / "README.md").read_text()
    for r in rows.values():
        cells = " | ".join(fmt(v) for v in r["values"].values())
        assert cells in md and cells in card
    assert "| set | metric | " in card and "combo (merged)" in card


def test_alloy_report_rerenders(merged: alloy.MergeResult, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(merged.out_dir, out)
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "report.md").read_text() == before
    page = (out / "report.html").read_text()
    for s in SECTIONS:
        assert f"<h2>{s[3:]}</h2>" in page
    assert page.count('src="data:image/png;base64,') == 2
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained
    bad = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert bad.exit_code == 1 and "has no report.json" in bad.output


def test_render_report_is_the_api_of_alloy_report(
    merged: alloy.MergeResult, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(merged.out_dir, out)
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    written = alloy.render_report(out, html=False)
    assert "report.md" in written and "report.html" not in written
    assert (out / "report.md").read_text() == before


def _broken(src: Path, dst: Path, scale: float) -> Path:
    """A copy of ``src`` whose output head is scaled: confident, wrong predictions."""
    shutil.copytree(src, dst)
    state = load_state_dict(src)
    for f in dst.glob("model*.safetensors*"):
        f.unlink()
    state["lm_head.weight"] = state["lm_head.weight"] * scale
    write_weights(state, dst)
    return dst


def test_eval_command_strict_json_and_suggestions(
    llama_models: ModelSet, files: dict[str, Path], tmp_path: Path
) -> None:
    bad = _broken(llama_models.base, tmp_path / "bad", 40.0)
    args = ["eval", str(bad), str(llama_models.base), str(llama_models.ft1)]
    args += ["--data", f"persona={files['persona']}", "--max-length", "16"]
    r = CliRunner().invoke(main, [*args, "--json", "--strict"])
    assert r.exit_code == 3, r.output
    ev = json.loads(r.output)
    row = ev["rows"][0]
    assert row["flag"] == "failed" and row["ratio"] > 2
    assert row["best_source"] in (str(llama_models.base), str(llama_models.ft1))
    assert row["ratio"] == pytest.approx(
        row["values"][str(bad)] / row["values"][row["best_source"]]
    )
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    assert "failed" in text.output and "retraining on the combined data" in text.output


def test_eval_write_report_uses_the_recorded_sources(
    llama_models: ModelSet, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "plain"
    alloy.merge(_ties(llama_models), out)
    md = (out / "report.md").read_text()
    assert "Not run." in md and "alloy:evaluation" not in (out / "README.md").read_text()
    r = CliRunner().invoke(
        main,
        [
            "eval",
            str(out),
            "--data",
            f"g={files['general']}",
            "--max-length",
            "16",
            "--write-report",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    labels = [m["label"] for m in report["evaluation"]["models"]]
    assert labels == [
        str(llama_models.base),
        str(llama_models.ft1),
        str(llama_models.ft2),
        str(out),
    ]
    assert "## Evaluation Comparison" in (out / "report.md").read_text()
    assert "<!-- alloy:evaluation -->" in (out / "README.md").read_text()


def test_merge_eval_strict_exits_3_and_keeps_the_merge(
    llama_models: ModelSet, files: dict[str, Path], tmp_path: Path
) -> None:
    cfg = {  # every weight scaled by 30: a merge that breaks the model
        "merge_method": "linear",
        "models": [{"model": str(llama_models.ft1), "parameters": {"weight": 30.0}}],
        "parameters": {"normalize": False},
    }
    (tmp_path / "c.yml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main,
        [
            "merge",
            str(tmp_path / "c.yml"),
            str(out),
            "--eval",
            f"p={files['persona']}",
            "--eval-strict",
        ],
    )
    assert r.exit_code == 3, r.output
    assert "failed" in r.output and (out / "model.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["rows"][0]["flag"] == "failed"
    assert "failed: p: the merge lost this skill" in (out / "report.md").read_text()


def test_eval_failure_keeps_the_merge_and_says_so(llama_models: ModelSet, tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "w1"}]}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(alloy.EvaluationError, match=r"written to .*no chat template"):
        alloy.merge(_ties(llama_models), out, eval_data=[str(chat)])
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"] is None
    assert any("evaluation failed" in w for w in report["warnings"])
    # a bad data file is found before anything is merged
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n')
    with pytest.raises(alloy.EvalDataError, match="bad.jsonl:1"):
        alloy.merge(_ties(llama_models), tmp_path / "never", eval_data=[str(bad)])
    assert not (tmp_path / "never").exists()


def test_plain_merge_imports_neither_transformers_nor_matplotlib_at_start(
    llama_models: ModelSet, tmp_path: Path
) -> None:
    code = (
        "import sys, alloy, alloy.cli\n"
        "assert 'transformers' not in sys.modules and 'matplotlib' not in sys.modules\n"
        f"alloy.merge({_ties(llama_models)!r}, {str(tmp_path / 'o')!r})\n"
        "assert 'transformers' not in sys.modules, 'a plain merge imported transformers'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eval_command_usage_errors(llama_models: ModelSet, files: dict[str, Path]) -> None:
    r = CliRunner().invoke(main, ["eval", str(llama_models.base), "--data", str(files["general"])])
    assert r.exit_code == 1 and "has no report.json to take the source models from" in r.output
    r = CliRunner().invoke(main, ["eval", str(llama_models.ft1), str(llama_models.base)])
    assert r.exit_code == 1 and "nothing to evaluate" in r.output


def test_eval_without_tokenizer_is_refused_before_merging(
    llama_models: ModelSet, files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(alloy.EvaluationError, match="needs its tokenizer"):
        alloy.merge(
            _ties(llama_models),
            tmp_path / "o",
            copy_tokenizer=False,
            eval_data=[str(files["general"])],
        )
    assert not (tmp_path / "o").exists()
