"""`api.merge(..., resume=True)` in process: an interrupted merge (Ctrl-C, raised at a pause
point of the writer) keeps its complete shards, a resume gives the bytes of an uninterrupted
run, and every difference that would change them is refused with the reason. The same with real
processes killed by SIGKILL: `test_resume_kill.py`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import xxhash
from safetensors.torch import save_file
from tiny import tiny_tensors, write_tiny

from alloy import _merging
from alloy.api import merge
from alloy.errors import OutputError
from alloy.io import resume as resuming
from alloy.io.output import MARKER

SHARD = "40KB"  # about seven shards of the scene's 225 KB


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's plot (a second per merge, and no part of the weights) is left out."""
    monkeypatch.setattr("alloy.report.report.layers_plot", lambda facts, path: False)


def scene(root: Path, method: str = "linear") -> Path:
    """A base and two fine-tunes (64 wide, 4 layers) and a config merging them by ``method``."""
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        write_tiny(
            root / "in" / name,
            seed,
            layers=4,
            tensors=tiny_tensors(seed, layers=4, hidden=64, vocab=64),
        )
    params = "{weight: 0.5, density: 0.5}" if method == "dare_ties" else "{weight: 0.5}"
    text = f"merge_method: {method}\n"
    if method == "dare_ties":
        text += f"base_model: {root / 'in' / 'base'}\n"
    text += "dtype: float32\nmodels:\n" + "".join(
        f"  - model: {root / 'in' / n}\n    parameters: {params}\n" for n in "ab"
    )
    cfg = root / "cfg.yml"
    cfg.write_text(text)
    return cfg


def contents(out: Path) -> dict[str, bytes]:
    """Every file of a merge but its report (whose timings differ between any two runs)."""
    return {
        p.name: p.read_bytes() for p in sorted(out.iterdir()) if not p.name.startswith("report")
    }


def temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if ".alloy-tmp-" in p.name)


def interrupt_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """Ctrl-C (a KeyboardInterrupt) when the run reaches ``point``, once."""
    original = resuming.pause_point

    def pause(name: str) -> None:
        if name == point:
            monkeypatch.setattr(resuming, "pause_point", original)
            raise KeyboardInterrupt
        original(name)

    monkeypatch.setattr(resuming, "pause_point", pause)


def interrupted(
    monkeypatch: pytest.MonkeyPatch, cfg: Path, out: Path, point: str = "shard-done:3", **kw: object
) -> Path:
    """Run a merge interrupted at ``point``; the temporary it kept."""
    interrupt_at(monkeypatch, point)
    with pytest.raises(KeyboardInterrupt) as info:
        merge(cfg, out, out_shard_size=SHARD, **kw)  # type: ignore[arg-type]
    kept = temporaries(out.parent)
    assert len(kept) == 1 and not out.exists()
    assert str(kept[0]) in getattr(info.value, _merging.RESUME_HINT)
    assert not (out.parent / f".{out.name}.alloy-lock").exists()  # the lock is released
    return kept[0]


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The scene's config and the files of its uninterrupted merge."""
    root = tmp_path_factory.mktemp("resume-linear")
    cfg = scene(root)
    with pytest.MonkeyPatch.context() as m:
        m.setattr("alloy.report.report.layers_plot", lambda facts, path: False)
        merge(cfg, root / "clean" / "out", out_shard_size=SHARD)  # the model card names "out"
    return cfg, contents(root / "clean" / "out")


def test_a_merge_is_several_shards_and_keeps_no_manifest(
    linear: tuple[Path, dict[str, bytes]],
) -> None:
    _, clean = linear
    shards = [n for n in clean if n.endswith(".safetensors")]
    assert len(shards) >= 5 and resuming.MANIFEST not in clean
    assert resuming.MANIFEST not in json.loads(clean[MARKER])["files"]


def test_ctrl_c_keeps_complete_shards_and_resume_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, clean = linear
    out = tmp_path / "out"
    tmp = interrupted(monkeypatch, cfg, out)
    manifest = json.loads((tmp / resuming.MANIFEST).read_text())
    assert sorted(manifest["complete"]) == _shards(clean)[:3]
    kept = {n: (tmp / n).stat().st_ino for n in _shards(clean)[:3]}
    result = merge(cfg, out, out_shard_size=SHARD, resume=True)
    assert result.resumed_shards == 3 and result.shards == len(_shards(clean))
    assert contents(out) == clean
    assert {n: (out / n).stat().st_ino for n in kept} == kept  # kept, not written again
    assert temporaries(tmp_path) == []
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("3 of" in w and "resumed" in w for w in warnings)


def _shards(files: dict[str, bytes]) -> list[str]:
    return [n for n in files if n.endswith(".safetensors")]


@pytest.mark.parametrize("point", ["shard-done:1", "mid-shard:4", "before-swap"])
def test_resume_from_each_point_gives_the_same_bytes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: tuple[Path, dict[str, bytes]],
    point: str,
) -> None:
    cfg, clean = linear
    out = tmp_path / "out"
    interrupted(monkeypatch, cfg, out, point)
    merge(cfg, out, out_shard_size=SHARD, resume=True)
    assert contents(out) == clean


def test_a_randomized_merge_resumes_to_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DARE's draws are seeded per tensor: skipping the kept shards changes no other draw."""
    cfg = scene(tmp_path, "dare_ties")
    merge(cfg, tmp_path / "clean" / "out", out_shard_size=SHARD, random_seed=7)
    clean = contents(tmp_path / "clean" / "out")
    other = tmp_path / "other-seed" / "out"
    merge(cfg, other, out_shard_size=SHARD, random_seed=8)
    assert contents(other)[_shards(clean)[1]] != clean[_shards(clean)[1]]  # the seed matters
    out = tmp_path / "out"
    interrupted(monkeypatch, cfg, out, "mid-shard:3", random_seed=7)
    with pytest.raises(OutputError, match=r"--random-seed was 7, now 8"):
        merge(cfg, out, out_shard_size=SHARD, random_seed=8, resume=True)
    merge(cfg, out, out_shard_size=SHARD, random_seed=7, resume=True)
    assert contents(out) == clean


def test_interrupted_before_any_shard_is_complete_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, _ = linear
    interrupt_at(monkeypatch, "mid-shard:1")
    with pytest.raises(KeyboardInterrupt):
        merge(cfg, tmp_path / "out", out_shard_size=SHARD)
    assert list(tmp_path.iterdir()) == []


def test_nothing_to_resume_says_so_and_merges(
    tmp_path: Path, linear: tuple[Path, dict[str, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, clean = linear
    with caplog.at_level(logging.WARNING, logger="alloy"):
        result = merge(cfg, tmp_path / "out", out_shard_size=SHARD, resume=True)
    assert "nothing to resume" in caplog.text and "starting a new merge" in caplog.text
    assert result.resumed_shards is None
    assert contents(tmp_path / "out") == clean


def test_a_run_without_resume_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, clean = linear
    out = tmp_path / "out"
    interrupted(monkeypatch, cfg, out)
    result = merge(cfg, out, out_shard_size=SHARD)
    assert result.resumed_shards is None and temporaries(tmp_path) == []
    assert contents(out) == clean


def test_the_manifest_records_each_kept_shard_by_size_and_xxh3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, clean = linear
    tmp = interrupted(monkeypatch, cfg, tmp_path / "out")
    manifest = json.loads((tmp / resuming.MANIFEST).read_text())
    assert manifest["format"] == 2
    for name in _shards(clean)[:3]:
        data = (tmp / name).read_bytes()
        assert data == clean[name]
        assert manifest["complete"][name] == {
            "size": len(data),
            "xxh3_128": xxhash.xxh3_128(data).hexdigest(),
        }


def test_a_manifest_of_the_sha256_format_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, _ = linear
    out = tmp_path / "out"
    tmp = interrupted(monkeypatch, cfg, out)
    path = tmp / resuming.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["format"] = 1
    path.write_text(json.dumps(manifest))
    _refused(cfg, out, "the manifest's format differs \\(1 then, 2 now\\)")


def test_a_damaged_complete_shard_is_merged_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: tuple[Path, dict[str, bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg, clean = linear
    out = tmp_path / "out"
    tmp = interrupted(monkeypatch, cfg, out)
    second = tmp / _shards(clean)[1]
    data = bytearray(second.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    second.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="alloy"):
        result = merge(cfg, out, out_shard_size=SHARD, resume=True)
    assert f"{_shards(clean)[1]} is not what was written" in caplog.text
    assert result.resumed_shards == 2
    assert contents(out) == clean


def _refused(cfg: Path, out: Path, match: str, **kw: object) -> None:
    """A resume refused with ``match`` leaves the interrupted run's temporary as it was."""
    tmp = temporaries(out.parent)
    before = {p.name: p.read_bytes() for p in tmp[0].iterdir()}
    with pytest.raises(OutputError, match=match) as info:
        merge(cfg, out, **{"out_shard_size": SHARD, "resume": True, **kw})  # type: ignore[arg-type]
    assert "run without --resume to start over" in str(info.value).lower()
    assert temporaries(out.parent) == tmp and not out.exists()
    assert {p.name: p.read_bytes() for p in tmp[0].iterdir()} == before
    assert not (out.parent / f".{out.name}.alloy-lock").exists()


def _reweighted(cfg: Path) -> None:
    cfg.write_text(cfg.read_text().replace("weight: 0.5", "weight: 0.25", 1))


def _retrained(cfg: Path) -> None:
    """Fine-tune ``a`` saved again: same names, shapes and size, other values."""
    a = cfg.parent / "in" / "a" / "model.safetensors"
    save_file(tiny_tensors(9, layers=4, hidden=64, vocab=64), a, metadata={"format": "pt"})


def _recast(cfg: Path) -> None:
    """Fine-tune ``b`` saved as bfloat16: another header."""
    tensors = tiny_tensors(2, layers=4, hidden=64, vocab=64)
    write_tiny(cfg.parent / "in" / "b", 2, layers=4, tensors=tensors, dtype=torch.bfloat16)


@pytest.mark.parametrize(
    ("change", "kw", "match"),
    [
        (_reweighted, {}, r"the merge config changed"),
        (_retrained, {}, r"the input \S+/a/model.safetensors changed \(modification time"),
        (
            _recast,
            {},
            r"the input \S+/b/model.safetensors changed \(size, modification time, header",
        ),
        (None, {"out_shard_size": "30KB"}, r"--out-shard-size \(bytes\) was 40000, now 30000"),
        (None, {"device": "cuda"}, r"--device was 'cpu', now 'cuda'"),
    ],
    ids=["config", "input-values", "input-header", "shard-size", "device"],
)
def test_a_resume_that_would_change_the_bytes_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[Path], None] | None,
    kw: dict[str, object],
    match: str,
) -> None:
    cfg = scene(tmp_path)
    out = tmp_path / "out"
    interrupted(monkeypatch, cfg, out)
    if change is not None:
        change(cfg)
    monkeypatch.setattr("alloy.api.check_device", lambda d: d)  # refused before any use
    _refused(cfg, out, match, **kw)


def test_another_alloy_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, clean = linear
    out = tmp_path / "out"
    interrupted(monkeypatch, cfg, out)
    with monkeypatch.context() as m:
        m.setattr(_merging, "__version__", "99.0")
        _refused(cfg, out, r"Alloy's version differs \('[^']+' then, '99.0' now\)")
    merge(cfg, out, out_shard_size=SHARD, resume=True)  # the same version again: resumed
    assert contents(out) == clean


def test_other_cpu_kernels_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, _ = linear
    out = tmp_path / "out"
    monkeypatch.setenv("ALLOY_KERNELS", "0")
    interrupted(monkeypatch, cfg, out)
    monkeypatch.setenv("ALLOY_KERNELS", "1")
    if not _merging.cpu_kernels_enabled():
        pytest.skip("the CPU kernels (numba) are not available here")
    _refused(cfg, out, r"the CPU kernels \(ALLOY_KERNELS, numba\) was False, now True")


def test_an_unreadable_manifest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, _ = linear
    out = tmp_path / "out"
    tmp = interrupted(monkeypatch, cfg, out)
    (tmp / resuming.MANIFEST).write_text("{not json")
    _refused(cfg, out, r"the manifest \S+ of the interrupted run is unreadable")


def test_the_seed_of_a_method_without_draws_does_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, clean = linear
    out = tmp_path / "out"
    interrupted(monkeypatch, cfg, out)
    result = merge(cfg, out, out_shard_size=SHARD, resume=True, random_seed=5)
    assert result.resumed_shards == 3
    weights = {n: b for n, b in contents(out).items() if n.startswith("model")}
    assert weights == {n: b for n, b in clean.items() if n.startswith("model")}


def test_resume_into_an_existing_output_needs_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linear: tuple[Path, dict[str, bytes]]
) -> None:
    """An interrupted --force run resumes with --force, and replaces the earlier output."""
    cfg, clean = linear
    out = tmp_path / "out"
    merge(cfg, out, out_shard_size="1GB")  # an earlier output, one shard
    interrupt_at(monkeypatch, "shard-done:2")
    with pytest.raises(KeyboardInterrupt):
        merge(cfg, out, out_shard_size=SHARD, force=True)
    assert (out / "model.safetensors").is_file()  # the earlier output is untouched
    with pytest.raises(OutputError, match="was replacing it .*pass --force with --resume"):
        merge(cfg, out, out_shard_size=SHARD, resume=True)
    assert len(temporaries(tmp_path)) == 1
    result = merge(cfg, out, out_shard_size=SHARD, resume=True, force=True)
    assert result.resumed_shards == 2
    assert contents(out) == clean


def test_resume_of_a_finished_output_says_there_is_nothing_to_resume(
    tmp_path: Path, linear: tuple[Path, dict[str, bytes]]
) -> None:
    cfg, _ = linear
    out = tmp_path / "out"
    merge(cfg, out, out_shard_size=SHARD)
    with pytest.raises(OutputError, match="finished Alloy output .* nothing to resume"):
        merge(cfg, out, out_shard_size=SHARD, resume=True)
