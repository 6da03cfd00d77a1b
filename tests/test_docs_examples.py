"""The docs and examples stay true: every example merges, every cited test exists."""

from __future__ import annotations

import ast
import json
import re
import runpy
import shlex
import shutil
import sys
import types
from pathlib import Path

import pytest

import alloy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("examples")
    for cfg in EXAMPLES:
        shutil.copy(cfg, d / cfg.name)
    argv = sys.argv
    sys.argv = ["make_tiny_models.py", str(d / "tiny")]
    try:
        runpy.run_path(str(ROOT / "examples" / "make_tiny_models.py"), run_name="__main__")
    finally:
        sys.argv = argv
    return d


@pytest.mark.parametrize("config", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_merges(config: Path, example_dir: Path, tmp_path: Path) -> None:
    res = alloy.merge(example_dir / config.name, tmp_path / "out")
    assert res.tensors >= 39 and (res.out_dir / "config.json").is_file()
    assert res.method == alloy.load_config(example_dir / config.name).merge_method


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_tests_cited_in_docs_exist() -> None:
    cited = 0
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for file, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", doc.read_text()):
            assert name in _test_names(ROOT / file), f"{doc.name} cites {file}::{name}"
            cited += 1
        for file, name in re.findall(r"`(tests/[\w/]+\.py)::\w+`, `::(\w+)`", doc.read_text()):
            assert name in _test_names(ROOT / file), f"{doc.name} cites {file}::{name}"
    assert cited >= 10


def test_public_api_is_explicit() -> None:
    exported = set(alloy.__all__)
    assert {"merge", "plan", "load_config", "AlloyError", "__version__"} <= exported
    public = {
        n
        for n in dir(alloy)
        if not n.startswith("_") and not isinstance(getattr(alloy, n), types.ModuleType)
    }
    assert public <= exported, public - exported


EVAL_DOC = ROOT / "docs" / "evaluation.md"


def test_evaluation_doc_formats_parse(tmp_path: Path) -> None:
    from alloy.evaluate.data import load_data_set, load_probe_set

    blocks = re.findall(
        r"<!-- format: ([\w-]+) -->\n```jsonl\n(.*?)```", EVAL_DOC.read_text(), re.S
    )
    assert sorted(k for k, _ in blocks) == ["contains", "data", "tool-calls"]
    for kind, body in blocks:
        f = tmp_path / f"{kind}.jsonl"
        f.write_text(body)
        n = len(body.strip().splitlines())
        if kind == "data":
            ds = load_data_set(kind, f)
            assert len(ds.documents) == n and ds.has_chat
        else:
            assert len(load_probe_set(kind, kind, f).probes) == n


def test_evaluation_doc_scores_are_the_scorers(tmp_path: Path) -> None:
    from alloy.evaluate.probes import score_tool_call, tool_call_metrics

    text = EVAL_DOC.read_text()
    m = re.search(r"<!-- scored: tool-calls (.*?) -->\n\|.*?\n\|.*?\n((?:\|.*\n)+)", text)
    assert m is not None
    expected = json.loads(m.group(1))
    rows = [r.strip("|").split("|") for r in m.group(2).splitlines()]
    assert len(rows) == 5
    for answer, js, name, args, exact in ([c.strip() for c in r] for r in rows):
        s = score_tool_call(answer.strip("`"), expected)
        assert (int(s.parsed), int(s.name)) == (int(js), int(name)), answer
        assert s.arguments == pytest.approx(float(args), abs=1e-3), answer
        assert tool_call_metrics([s])["exact"] == int(exact), answer


def _command_blocks(path: Path) -> list[list[str]]:
    """The `alloy ...` lines of the bash blocks that run `alloy check` (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    lines = [
        line.split("  #")[0].strip()
        for block in blocks
        if "alloy check" in block
        for line in block.splitlines()
        if line.startswith("alloy ")
    ]
    return [shlex.split(line) for line in lines]


@pytest.mark.parametrize("doc", ["README.md", "docs/analysis.md"])
def test_analysis_commands_in_docs_run(
    doc: str, example_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from alloy.cli import main

    shutil.copytree(example_dir / "tiny", tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    commands = _command_blocks(ROOT / doc)
    assert [c[1] for c in commands][:4] == ["check", "inventory", "analyze", "recommend"]
    for args in commands:
        r = CliRunner().invoke(main, args[1:])
        assert r.exit_code == 0, (args, r.output)
    assert (tmp_path / "recommended.yml").is_file()
    assert alloy.load_config(tmp_path / "recommended.yml").merge_method == "tsv"
