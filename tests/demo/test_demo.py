"""`alloy demo` end to end at the small size: the merges keep the specialists' skills."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cores import worker_cores

from alloy.cli import main
from alloy.demo.pipeline import MARKER, prepare_out, run_demo, summary
from alloy.errors import OutputError


@pytest.mark.slow
def test_small_demo_merges_keep_both_skills(tmp_path: Path) -> None:
    lines: list[str] = []
    res = run_demo(
        tmp_path / "demo", size="small", seed=0, echo=lines.append, workers=worker_cores()
    )  # the same results with any number of workers
    assert [line.split("]")[0][1:] for line in lines] == [
        "corpora", "tokenizer", "base", "specialists", "adapters", "recommend full",
        "recommend lora", "merge", "evaluate", "report",
    ]  # fmt: skip
    base = res.result("base")
    for family in ("full", "lora"):
        ties = res.result(f"{family}-ties")
        for skill in ("persona", "tools"):
            assert ties.retention[skill] is not None and ties.retention[skill] > 0.5, (
                family, skill, ties.retention,
            )  # fmt: skip
        # the merged model writes valid tool calls more often than the base
        assert ties.value("tools_probes", "json") > base.value("tools_probes", "json")
        rec = res.result(f"{family}-recommended")
        assert rec.recommended and rec.name == res.advice[family].method
        assert rec.value("tools_probes", "json") > base.value("tools_probes", "json")
        # each merge's own report holds its comparison with the base and the specialists
        merge_report = json.loads((Path(ties.path) / "report.json").read_text())
        labels = [m["label"] for m in merge_report["evaluation"]["models"]]
        assert labels == ["base", f"persona-{family}", f"tools-{family}", f"{family}-ties"]
    for name in ("report.md", "report.html", "report.json", "retention.png", MARKER):
        assert (tmp_path / "demo" / name).is_file()
    text = summary(res)
    assert (
        f"full-recommended ({res.advice['full'].method})" in text
        and str(tmp_path / "demo" / "report.md") in text
    )


def test_demo_never_replaces_other_files(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds files the demo did not write"):
        prepare_out(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        prepare_out(tmp_path / "a-file")
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "a-file")])
    assert r.exit_code == 2 and "is a file" in r.output  # click's usage error
    # an earlier demo's directory is replaced
    prepare_out(tmp_path / "demo")
    (tmp_path / "demo" / "old.txt").write_text("old")
    prepare_out(tmp_path / "demo")
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [MARKER]


def test_demo_help_lists_its_options() -> None:
    r = CliRunner().invoke(main, ["demo", "--help"])
    assert r.exit_code == 0
    for opt in ("--out", "--size", "--seed"):
        assert opt in r.output
