"""The search end to end on tiny checkpoints: in-memory trials equal `alloy merge`, the best
config merges, a stopped search resumes, the extras are named when missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from checkpoints import load_state_dict

import alloy
from alloy.api_search import search
from alloy.errors import ConfigError, EvalDataError, UsageError
from alloy.search.run import SearchOptions
from alloy.search.space import parse_space
from alloy.search.splits import load_splits
from alloy.search.trial import TrialEvaluator

from .search_family import Family, space_text


def _sets(f: Family) -> list[str]:
    return [f"alpha={f.alpha_set}", f"beta={f.beta_set}"]


def _write_space(f: Family, tmp: Path) -> Path:
    path = tmp / "space.yml"
    path.write_text(space_text(f), encoding="utf-8")
    return path


def test_the_split_interleaves_records_and_a_test_file_replaces_it(
    skill_family: Family, tmp_path: Path
) -> None:
    splits = load_splits(_sets(skill_family))
    alpha_val, alpha_test = splits.validation.data[0], splits.test.data[0]
    lines = skill_family.alpha_set.read_text().splitlines()
    assert [d.text for d in alpha_val.documents] == [json.loads(x)["text"] for x in lines[0::2]]
    assert [d.text for d in alpha_test.documents] == [json.loads(x)["text"] for x in lines[1::2]]
    other = tmp_path / "alpha_test.jsonl"
    other.write_text('{"text": "w4 w5 w6"}\n', encoding="utf-8")
    given = load_splits(_sets(skill_family), test_data=[f"alpha={other}"])
    assert len(given.validation.data[0].documents) == len(lines)
    assert [d.text for d in given.test.data[0].documents] == ["w4 w5 w6"]
    with pytest.raises(EvalDataError, match="'gamma' has no validation set"):
        load_splits(_sets(skill_family), test_data=[f"gamma={other}"])


def test_a_trial_merged_in_memory_equals_alloy_merge(skill_family: Family, tmp_path: Path) -> None:
    space = parse_space(space_text(skill_family))
    config = space.instantiate(
        {
            "merge_method": "ties",
            "models[0].parameters.weight": 0.7,
            "models[0].parameters.density": 0.6,
            "models[1].parameters.weight": 0.9,
            "models[1].parameters.density": 0.4,
        }
    )
    with TrialEvaluator(space, load_splits(_sets(skill_family))) as ev:
        in_memory = ev.merge(config)
    alloy.merge(config, tmp_path / "merged")
    written = load_state_dict(tmp_path / "merged")
    assert sorted(in_memory) == sorted(written)
    for name, t in written.items():
        assert torch.equal(in_memory[name], t), name


def test_a_method_that_cannot_plan_fails_before_the_first_trial(
    skill_family: Family,
) -> None:
    f = skill_family
    # ties needs each model's weight, which this space never gives: refused before any trial
    text = (
        "merge_method: {choice: [tsv, ties]}\n"
        f"base_model: {f.base}\nmodels:\n  - model: {f.alpha}\n  - model: {f.beta}\n"
        "parameters:\n  alpha: {search: [0.5, 1.5]}\n"
    )
    with pytest.raises(ConfigError) as e:
        TrialEvaluator(parse_space(text), load_splits(_sets(skill_family)))
    messages = [i.message for i in e.value.issues]
    assert messages and all(m.startswith("with merge_method ties") for m in messages), messages


def test_search_finds_a_config_that_merges_and_resumes(
    skill_family: Family, tmp_path: Path
) -> None:
    space, out = _write_space(skill_family, tmp_path), tmp_path / "search"
    options = SearchOptions(trials=3, seed=0, top=1, recommend=False)
    first = search(space, out, eval_data=_sets(skill_family), options=options)
    assert first.trials == 3
    assert {"best.yml", "trials.md", "trials.json", "pareto.png", "report.md"} <= set(first.files)
    best = yaml.safe_load((out / "best.yml").read_text())
    assert best == first.best_config
    merged = alloy.merge(out / "best.yml", tmp_path / "best-merged")
    assert merged.method == best["merge_method"]
    record = json.loads((out / "trials.json").read_text())
    assert record["skills"] == ["alpha", "beta"]
    tested = [t for t in record["trials"] if t["test"] is not None]
    assert len(tested) == 1 and tested[0]["label"] == record["best"]
    # every source keeps all of its own skill, by definition, and the base none
    by_label = {s["label"]: s["validation"]["retention"] for s in record["sources"]}
    assert by_label[str(skill_family.alpha)]["alpha"] == pytest.approx(1.0)
    assert by_label[str(skill_family.base)] == {"alpha": 0.0, "beta": 0.0}

    with pytest.raises(UsageError, match="--resume"):
        search(space, out, eval_data=_sets(skill_family), options=options)
    resumed = SearchOptions(trials=5, seed=0, top=0, recommend=False, resume=True)
    second = search(space, out, eval_data=_sets(skill_family), options=resumed)
    assert second.trials == 5
    again = json.loads((out / "trials.json").read_text())["trials"]
    assert [t["config"] for t in again[:3]] == [t["config"] for t in record["trials"]]


def test_a_guard_set_is_no_skill_and_a_wrong_guard_is_named(
    skill_family: Family, tmp_path: Path
) -> None:
    space, out = _write_space(skill_family, tmp_path), tmp_path / "search"
    options = SearchOptions(trials=1, seed=0, top=0, recommend=False, guards=("beta",))
    search(space, out, eval_data=_sets(skill_family), options=options)
    record = json.loads((out / "trials.json").read_text())
    assert record["skills"] == ["alpha"]  # beta, a skill without the guard, only guards
    assert set(record["trials"][0]["validation"]["retention"]) == {"alpha"}
    assert "beta/perplexity" in record["trials"][0]["validation"]["values"]
    bad = SearchOptions(trials=1, seed=0, guards=("gamma",))
    with pytest.raises(UsageError, match="--guard gamma: no --eval or --probe set"):
        search(space, tmp_path / "other", eval_data=_sets(skill_family), options=bad)
    assert not (tmp_path / "other" / "study.journal").exists()


def test_the_missing_extras_are_named(
    skill_family: Family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = _write_space(skill_family, tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(UsageError, match=r"alloy-merge\[search\]"):
        search(space, tmp_path / "out", eval_data=_sets(skill_family))
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "ray", None)
    options = SearchOptions(trials=1, ray="auto", recommend=False)
    with pytest.raises(UsageError, match=r"alloy-merge\[ray\]"):
        search(space, tmp_path / "out2", eval_data=_sets(skill_family), options=options)
