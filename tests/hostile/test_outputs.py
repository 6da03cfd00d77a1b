"""Hostile outputs: Alloy never writes or deletes an input, replaces only its own output, and
never follows a link (merge, recommend -o, analyze --plots, report)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest

from alloy.io.output import MARKER

from .harness import Case, Scene, Table, run_case

cases = Table()
OVERLAPS = "overlaps the input model"


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)


def _hub(scene: Scene) -> tuple[Path, Path]:
    """A Hugging Face cache repo whose snapshot links into blobs/; the config merges it."""
    repo = scene.root / "hub" / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / "c0ffee"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(scene.a.iterdir())):
        blob = blobs / f"blob{i}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    scene.write_config(snap, scene.b)
    return repo, snap


# --- OUT overlapping an input --------------------------------------------------------------


@cases
def out_is_input(s: Scene) -> Case:
    return Case(s.merge_args(s.a, "--force"), 1, [OVERLAPS, str(s.a)])


@cases
def out_is_input_without_force(s: Scene) -> Case:
    return Case(s.merge_args(s.a), 1, [OVERLAPS])


@cases
def out_is_input_with_trailing_slash(s: Scene) -> Case:
    return Case(s.merge_args(str(s.a) + "/", "--force"), 1, [OVERLAPS])


@cases
def out_is_input_through_dotdot(s: Scene) -> Case:
    (s.a / "sub").mkdir()
    return Case(s.merge_args(s.a / "sub" / "..", "--force"), 1, [OVERLAPS])


@cases
def out_inside_input(s: Scene) -> Case:
    return Case(s.merge_args(s.a / "merged"), 1, [OVERLAPS])


@cases
def out_deep_inside_input(s: Scene) -> Case:
    return Case(s.merge_args(s.a / "x" / "y" / "merged"), 1, [OVERLAPS])


@cases
def out_contains_inputs(s: Scene) -> Case:
    return Case(s.merge_args(s.inputs, "--force"), 1, [OVERLAPS])


@cases
def out_is_root_containing_everything(s: Scene) -> Case:
    return Case(s.merge_args(s.root, "--force"), 1, [OVERLAPS])


@cases
def out_symlink_to_input(s: Scene) -> Case:
    (s.root / "link").symlink_to(s.a)
    return Case(s.merge_args(s.root / "link", "--force"), 1, [OVERLAPS])


@cases
def out_inside_symlink_to_input(s: Scene) -> Case:
    (s.root / "link").symlink_to(s.a)
    return Case(s.merge_args(s.root / "link" / "merged"), 1, [OVERLAPS])


@cases
def input_is_symlink_to_out(s: Scene) -> Case:
    (s.root / "alias").symlink_to(s.a)
    s.write_config(s.root / "alias", s.b)
    return Case(s.merge_args(s.a, "--force"), 1, [OVERLAPS])


@cases
def out_is_earlier_output_used_as_input(s: Scene) -> Case:
    s.alloy_output()
    s.write_config(s.out, s.b)
    return Case(s.merge_args(s.out, "--force"), 1, [OVERLAPS])


@cases
def out_symlink_to_empty_dir(s: Scene) -> Case:
    (s.root / "empty").mkdir()
    (s.root / "link").symlink_to(s.root / "empty")
    return Case(s.merge_args(s.root / "link", "--force"), 1, ["symbolic link"])


@cases
def out_dangling_symlink(s: Scene) -> Case:
    (s.root / "link").symlink_to(s.root / "nowhere")
    return Case(s.merge_args(s.root / "link", "--force"), 1, ["symbolic link"])


# --- Hugging Face cache: snapshots link into blobs/ ----------------------------------------


@cases
def out_is_hub_blobs(s: Scene) -> Case:
    repo, _ = _hub(s)
    return Case(s.merge_args(repo / "blobs", "--force"), 1, [OVERLAPS])


@cases
def out_is_hub_repo(s: Scene) -> Case:
    repo, _ = _hub(s)
    return Case(s.merge_args(repo, "--force"), 1, [OVERLAPS])


@cases
def out_is_hub_snapshots(s: Scene) -> Case:
    repo, _ = _hub(s)
    return Case(s.merge_args(repo / "snapshots", "--force"), 1, [OVERLAPS])


@cases
def out_is_hub_snapshot(s: Scene) -> Case:
    _, snap = _hub(s)
    return Case(s.merge_args(snap, "--force"), 1, [OVERLAPS])


@cases
def out_is_a_blob(s: Scene) -> Case:
    repo, _ = _hub(s)
    return Case(s.merge_args(repo / "blobs" / "blob0", "--force"), 2, ["is a file"])


@cases
def out_inside_hub_blobs(s: Scene) -> Case:
    repo, _ = _hub(s)
    return Case(s.merge_args(repo / "blobs" / "merged"), 1, [OVERLAPS])


# --- --force replaces only an earlier Alloy output, links never followed --------------------


@cases
def force_over_links_to_input(s: Scene) -> Case:
    _link_tree(s.a, s.out)
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy", str(s.out)])


@cases
def no_force_over_links_to_input(s: Scene) -> Case:
    _link_tree(s.a, s.out)
    return Case(s.merge_args(), 1, ["--force", str(s.out)])


@cases
def force_over_hard_links_to_input(s: Scene) -> Case:
    s.out.mkdir()
    for f in s.a.iterdir():
        os.link(f, s.out / f.name)
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy"])


@cases
def force_over_output_whose_weights_link_to_input(s: Scene) -> Case:
    s.alloy_output()
    (s.out / "model.safetensors").unlink()
    (s.out / "model.safetensors").symlink_to(s.a / "model.safetensors")
    return Case(s.merge_args(None, "--force"), 1, ["symbolic link", "model.safetensors"])


@cases
def force_over_output_whose_weights_hard_link_input(s: Scene) -> Case:
    s.alloy_output()
    (s.out / "model.safetensors").unlink()
    os.link(s.a / "model.safetensors", s.out / "model.safetensors")
    return Case(s.merge_args(None, "--force"), 1, ["hard link", "model.safetensors"])


@cases
def force_over_output_whose_config_hard_links_input(s: Scene) -> Case:
    s.alloy_output()
    (s.out / "config.json").unlink()
    os.link(s.a / "config.json", s.out / "config.json")
    return Case(s.merge_args(None, "--force"), 1, ["hard link", "config.json"])


@cases
def force_over_output_linking_into_hub_blobs(s: Scene) -> Case:
    repo, _ = _hub(s)
    s.alloy_output()
    (s.out / "model.safetensors").unlink()
    blob = next(p for p in (repo / "blobs").iterdir() if p.stat().st_size > 1000)
    (s.out / "model.safetensors").symlink_to(blob)
    return Case(s.merge_args(None, "--force"), 1, ["symbolic link"])


def _forge(out: Path, files: list[str]) -> None:
    out.mkdir(exist_ok=True)
    (out / MARKER).write_text(json.dumps({"files": files}))


@cases
def forged_marker_over_symlinks(s: Scene) -> Case:
    _link_tree(s.a, s.out)
    _forge(s.out, sorted(p.name for p in s.a.iterdir()))
    return Case(s.merge_args(None, "--force"), 1, ["symbolic link"])


@cases
def forged_marker_over_hard_links(s: Scene) -> Case:
    s.out.mkdir()
    for f in s.a.iterdir():
        os.link(f, s.out / f.name)
    _forge(s.out, sorted(p.name for p in s.a.iterdir()))
    return Case(s.merge_args(None, "--force"), 1, ["hard link"])


@cases
def forged_marker_over_dir_with_hard_link_inside(s: Scene) -> Case:
    (s.out / "sub").mkdir(parents=True)
    os.link(s.a / "model.safetensors", s.out / "sub" / "w.bin")
    _forge(s.out, ["sub"])
    return Case(s.merge_args(None, "--force"), 1, ["hard link"])


@cases
def marker_that_is_a_symlink(s: Scene) -> Case:
    (s.root / "m.json").write_text(json.dumps({"files": ["keep.txt"]}))
    s.out.mkdir()
    (s.out / "keep.txt").write_text("mine")
    (s.out / MARKER).symlink_to(s.root / "m.json")
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy"])


@cases
def marker_corrupt(s: Scene) -> Case:
    s.out.mkdir()
    (s.out / "keep.txt").write_text("mine")
    (s.out / MARKER).write_text("{not json")
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy"])


@cases
def marker_files_not_a_list(s: Scene) -> Case:
    s.out.mkdir()
    (s.out / "keep.txt").write_text("mine")
    (s.out / MARKER).write_text(json.dumps({"files": "keep.txt"}))
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy"])


@cases
def marker_is_a_directory(s: Scene) -> Case:
    (s.out / MARKER).mkdir(parents=True)
    (s.out / "keep.txt").write_text("mine")
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy"])


@cases
def output_plus_user_file(s: Scene) -> Case:
    s.alloy_output()
    (s.out / "notes.txt").write_text("mine")
    return Case(s.merge_args(None, "--force"), 1, ["did not write", "notes.txt"])


@cases
def output_plus_user_dir(s: Scene) -> Case:
    s.alloy_output()
    (s.out / "mine").mkdir()
    (s.out / "mine" / "x").write_text("x")
    return Case(s.merge_args(None, "--force"), 1, ["did not write", "mine"])


@cases
def output_without_force(s: Scene) -> Case:
    s.alloy_output()
    return Case(s.merge_args(), 1, ["--force"])


@cases
def output_with_force_is_replaced(s: Scene) -> Case:
    s.alloy_output()
    s.write_config(s.a, s.b, method="task_arithmetic", extra=f"base_model: {s.a}\n")
    return Case(s.merge_args(None, "--force"), 0, ["merged with task_arithmetic"])


@cases
def foreign_dir_without_force(s: Scene) -> Case:
    s.out.mkdir()
    (s.out / "thesis.tex").write_text("years of work")
    return Case(s.merge_args(), 1, ["--force", str(s.out)])


@cases
def foreign_dir_with_force(s: Scene) -> Case:
    s.out.mkdir()
    (s.out / "thesis.tex").write_text("years of work")
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy", str(s.out)])


@cases
def foreign_hidden_file_with_force(s: Scene) -> Case:
    s.out.mkdir()
    (s.out / ".env").write_text("SECRET=1")
    return Case(s.merge_args(None, "--force"), 1, ["not written by Alloy"])


@cases
def empty_dir_is_used(s: Scene) -> Case:
    s.out.mkdir()
    return Case(s.merge_args(), 0, ["merged with linear"])


@cases
def out_is_a_file(s: Scene) -> Case:
    s.out.write_text("precious")
    return Case(s.merge_args(None, "--force"), 2, ["is a file", "out"])


@cases
def out_under_a_file(s: Scene) -> Case:
    (s.root / "f").write_text("precious")
    return Case(s.merge_args(s.root / "f" / "out"), 1, ["cannot", str(s.root / "f")])


# --- locks and the temporaries of dead runs -------------------------------------------------


@cases
def out_locked_by_another_run(s: Scene) -> Case:
    lock = s.root / ".out.alloy-lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    s.held = fd  # type: ignore[attr-defined]  (closed with the scene's process)
    return Case(s.merge_args(), 1, ["another Alloy run", str(s.out)])


@cases
def dead_temporary_is_removed(s: Scene) -> Case:
    dead = s.root / ".out.alloy-tmp-abcd1234"
    dead.mkdir()
    (dead / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 4096)
    return Case(s.merge_args(), 0, [], removed=[dead])


@cases
def dead_old_copy_is_removed(s: Scene) -> Case:
    dead = s.root / ".out.alloy-old-abcd1234"
    dead.mkdir()
    (dead / "config.json").write_text("{}")
    return Case(s.merge_args(), 0, [], removed=[dead])


@cases
def temporaries_of_another_out_are_kept(s: Scene) -> Case:
    other = s.root / ".other.alloy-tmp-abcd1234"
    other.mkdir()
    (other / "x").write_text("x")
    return Case(s.merge_args(), 0, [])


@cases
def temporary_name_that_is_a_link_is_kept(s: Scene) -> Case:
    (s.root / ".out.alloy-tmp-abcd1234").symlink_to(s.a)
    return Case(s.merge_args(), 0, [])


@cases
def temporary_like_name_of_another_shape_is_kept(s: Scene) -> Case:
    (s.root / ".out.alloy-tmp-notours-longer").mkdir()
    return Case(s.merge_args(), 0, [])


# --- the other commands that write ----------------------------------------------------------


def _recommend(s: Scene, target: Path) -> list[str]:
    return ["recommend", str(s.a), str(s.b), "--base", str(s.a), "-q", "-o", str(target)]


@cases
def recommend_over_input_config(s: Scene) -> Case:
    return Case(_recommend(s, s.a / "config.json"), 2, [OVERLAPS, "--output"])


@cases
def recommend_into_input_dir(s: Scene) -> Case:
    return Case(_recommend(s, s.b / "new.yml"), 2, [OVERLAPS])


@cases
def recommend_through_symlink_to_input_file(s: Scene) -> Case:
    (s.root / "rec.yml").symlink_to(s.a / "config.json")
    return Case(_recommend(s, s.root / "rec.yml"), 2, [OVERLAPS])


@cases
def recommend_over_hard_link_to_input_file(s: Scene) -> Case:
    os.link(s.a / "config.json", s.root / "rec.yml")
    return Case(_recommend(s, s.root / "rec.yml"), 2, ["hard link"])


@cases
def recommend_into_hub_blobs(s: Scene) -> Case:
    repo, snap = _hub(s)
    args = ["recommend", str(snap), str(s.b), "--base", str(s.b), "-q"]
    return Case([*args, "-o", str(repo / "blobs" / "rec.yml")], 2, [OVERLAPS])


@cases
def recommend_into_a_missing_directory(s: Scene) -> Case:
    return Case(_recommend(s, s.root / "no" / "such" / "rec.yml"), 2, ["cannot write", "rec.yml"])


def _analyze(s: Scene, plots: Path) -> list[str]:
    return ["analyze", str(s.a), str(s.b), "-q", "--plots", str(plots)]


@cases
def plots_into_input(s: Scene) -> Case:
    return Case(_analyze(s, s.a), 1, [OVERLAPS, "--plots"])


@cases
def plots_inside_input(s: Scene) -> Case:
    return Case(_analyze(s, s.a / "plots"), 1, [OVERLAPS])


@cases
def plots_through_symlink_to_input(s: Scene) -> Case:
    (s.root / "plots").symlink_to(s.b)
    return Case(_analyze(s, s.root / "plots"), 1, [OVERLAPS])


@cases
def plots_containing_inputs(s: Scene) -> Case:
    return Case(_analyze(s, s.inputs), 1, [OVERLAPS])


@cases
def report_into_a_source(s: Scene) -> Case:
    s.alloy_output()
    rep = json.loads((s.out / "report.json").read_text())
    rep["merge"]["models"][0]["path"] = str(s.out)
    (s.out / "report.json").write_text(json.dumps(rep))
    return Case(["report", str(s.out)], 1, [OVERLAPS])


@cases
def demo_through_a_symlink(s: Scene) -> Case:
    (s.root / "link").symlink_to(s.a)
    return Case(["demo", "--out", str(s.root / "link"), "--size", "small"], 1, ["symbolic link"])


@cases
def demo_over_user_files(s: Scene) -> Case:
    return Case(["demo", "--out", str(s.a), "--size", "small"], 1, ["did not write", str(s.a)])


@pytest.mark.parametrize("setup", cases.params())
def test_output_case(tmp_path: Path, setup: object) -> None:
    run_case(Scene(tmp_path), setup)  # type: ignore[arg-type]
