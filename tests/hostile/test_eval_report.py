"""`alloy eval --write-report` never writes into a model it evaluated as a source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from checkpoints import ModelSet

from .harness import Case, Scene, check, run_cli, snapshot


@pytest.mark.parametrize(
    ("how", "says"),
    [("same path", ["same label"]), ("symlink", ["overlaps the input model", "MERGED"])],
)
def test_write_report_into_a_source_is_refused(
    llama_models: ModelSet, tmp_path: Path, how: str, says: list[str]
) -> None:
    scene = Scene(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(llama_models.base, model)
    merged = model
    if how == "symlink":
        merged = tmp_path / "alias"
        merged.symlink_to(model)
    data = tmp_path / "g.txt"
    data.write_text("The quick brown fox jumps over the lazy dog. " * 8)
    args = ["eval", str(merged), str(model), "--data", f"g={data}", "--max-length", "16"]
    case = Case([*args, "--write-report"], 1, says)
    before = snapshot(tmp_path)
    check(scene, case, before, run_cli(case.args))
