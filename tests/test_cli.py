"""The `alloy` command: merge, plan, methods, errors and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tiny import write_tiny

from alloy.cli import main


def _config(tmp_path: Path) -> Path:
    write_tiny(tmp_path / "base", 0)
    write_tiny(tmp_path / "a", 1)
    write_tiny(tmp_path / "b", 2)
    cfg = {
        "merge_method": "ties",
        "base_model": str(tmp_path / "base"),
        "models": [
            {"model": str(tmp_path / "a"), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(tmp_path / "b"), "parameters": {"weight": 1.0, "density": 0.5}},
        ],
        "dtype": "bfloat16",
    }
    p = tmp_path / "ties.yml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_merge_command_prints_what_was_written(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main, ["merge", str(cfg), str(out), "--out-shard-size", "300", "--lazy-unpickle"]
    )
    assert r.exit_code == 0, r.output
    assert "merged with ties" in r.output and "model.safetensors.index.json" in r.output
    assert (out / "model-00001-of-00004.safetensors").is_file() or len(
        list(out.glob("model-*.safetensors"))
    ) > 1
    again = CliRunner().invoke(main, ["merge", str(cfg), str(out)])
    assert again.exit_code == 1 and "--force" in again.output


def test_merge_reports_config_errors_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("merge_method: linear\nmodels:\n  - model: x\n    paramters: {weight: 1}\n")
    r = CliRunner().invoke(main, ["merge", str(bad), str(tmp_path / "out")])
    assert r.exit_code == 1
    assert "bad.yml:4" in r.output and "did you mean 'parameters'" in r.output
    assert not (tmp_path / "out").exists()


def test_plan_summary_and_tensor(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    r = CliRunner().invoke(main, ["plan", str(cfg)])
    assert r.exit_code == 0, r.output
    # 1 embedding + 3 layers x 3 tensors + norm + head = 12 tensors
    assert "output: 12 tensors in 1 shard(s)" in r.output
    assert "peak memory (estimate)" in r.output and "read:" in r.output
    r2 = CliRunner().invoke(
        main, ["plan", str(cfg), "--tensor", "model.layers.2.mlp.up_proj.weight"]
    )
    assert r2.exit_code == 0, r2.output
    assert "weight=1.0, density=0.5" in r2.output and "layer position t: 1" in r2.output
    assert "base:" in r2.output and "-> bfloat16" in r2.output
    r3 = CliRunner().invoke(main, ["plan", str(cfg), "--tensor", "model.layers.2.mlp.up_proj"])
    assert r3.exit_code == 1 and "did you mean 'model.layers.2.mlp.up_proj.weight'" in r3.output


def test_methods_lists_and_describes() -> None:
    r = CliRunner().invoke(main, ["methods"])
    assert r.exit_code == 0
    for name in (
        "linear",
        "slerp",
        "task_arithmetic",
        "ties",
        "dare_ties",
        "dare_linear",
        "passthrough",
    ):
        assert name in r.output
    r2 = CliRunner().invoke(main, ["methods", "ties"])
    assert "density = 1.0" in r2.output and "weight (required)" in r2.output
    assert "2306.01708" in r2.output
    r3 = CliRunner().invoke(main, ["methods", "tie"])
    assert r3.exit_code == 1 and "Did you mean 'ties'" in r3.output


def test_ctrl_c_says_nothing_was_written_only_for_atomic_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alloy.api
    import alloy.demo.pipeline

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(alloy.api, "merge", interrupted)
    monkeypatch.setattr(alloy.demo.pipeline, "run_demo", interrupted)
    r = CliRunner().invoke(main, ["merge", str(_config(tmp_path)), str(tmp_path / "out")])
    assert r.exit_code == 130 and "interrupted; nothing was written" in r.output
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 130 and "interrupted" in r.output
    assert "nothing was written" not in r.output  # the demo leaves what it finished


def _refused(r: object, *words: str) -> None:
    """A clear error: exit status 1 or 2 through the error handler (no traceback), naming
    ``words``."""
    from click.testing import Result

    assert isinstance(r, Result)
    assert isinstance(r.exception, SystemExit) and r.exit_code in (1, 2), r.output
    assert "Traceback" not in r.output and r.output.startswith("error: "), r.output
    for w in words:
        assert w in r.output, r.output


@pytest.mark.parametrize("size", ["5XB", "0", "-1", "nanGB", "12XB"])
def test_a_shard_size_that_is_no_size_is_a_clear_error(tmp_path: Path, size: str) -> None:
    cfg = _config(tmp_path)
    _refused(
        CliRunner().invoke(main, ["plan", str(cfg), "--out-shard-size", size]), "--out-shard-size"
    )
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["merge", str(cfg), str(out), "--out-shard-size", size])
    _refused(r, "--out-shard-size", size)
    assert not out.exists()


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_a_thread_count_below_one_is_a_usage_error(tmp_path: Path, threads: str) -> None:
    cfg = _config(tmp_path)
    r = CliRunner().invoke(main, ["merge", str(cfg), str(tmp_path / "out"), "-j", threads])
    _refused(r, "--num-threads", f"got {threads}")
    assert not (tmp_path / "out").exists()


def test_a_device_torch_does_not_see_is_a_device_error(tmp_path: Path) -> None:
    import torch

    cfg = _config(tmp_path)
    out = tmp_path / "out"
    unknown = CliRunner().invoke(main, ["merge", str(cfg), str(out), "--device", "tpu"])
    _refused(unknown, "'tpu'", "cpu, cuda, cuda:N or mps")
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has a cuda:1")
    r = CliRunner().invoke(main, ["merge", str(cfg), str(out), "--device", "cuda:1"])
    _refused(r, "--device", "'cuda:1'")
    assert not out.exists()
    extract = ["lora", "extract", str(tmp_path / "adapter"), "--model", str(tmp_path / "a")]
    r = CliRunner().invoke(
        main, [*extract, "--base", str(tmp_path / "base"), "-r", "2", "--device", "cuda:1"]
    )
    _refused(r, "--device", "'cuda:1'")
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize("command", ["analyze", "recommend"])
def test_analysis_workers_below_one_are_refused(tmp_path: Path, command: str) -> None:
    write_tiny(tmp_path / "base", 0)
    write_tiny(tmp_path / "a", 1)
    r = CliRunner().invoke(
        main, [command, str(tmp_path / "a"), "--base", str(tmp_path / "base"), "--workers", "0"]
    )
    _refused(r, "--workers", "at least 1")
