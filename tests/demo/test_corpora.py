"""The demo's corpora: seeded, held-out splits disjoint from training, files the evaluator reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloy.demo.corpora import (
    PERSONA_PREFIX,
    SIGNATURE_PHRASES,
    SIZES,
    TOOLS_PREFIX,
    CorpusSizes,
    generate_corpora,
    plain_call,
    write_eval_files,
)
from alloy.evaluate.data import load_data_set, load_probe_set
from alloy.evaluate.probes import score_contains, score_tool_call

SMALL = CorpusSizes(general_train=200, skill_train=120, held_out=30, probes=10)


def _request(text: str) -> str:
    """The user's request of a skill example: the first line without ``user: ``."""
    return text.split("\n", 1)[0].removeprefix("user: ")


def test_same_seed_same_corpora_other_seed_others() -> None:
    a, b, c = generate_corpora(3, SMALL), generate_corpora(3, SMALL), generate_corpora(4, SMALL)
    assert a == b
    for name in ("general", "persona", "tools"):
        assert a[name].train != c[name].train
        assert a[name].held_out != c[name].held_out


def test_sizes_and_held_out_requests_never_trained_on() -> None:
    corpora = generate_corpora(0, SMALL)
    assert len(corpora["general"].train) == 200 and len(corpora["general"].held_out) == 30
    assert not set(corpora["general"].held_out) & set(corpora["general"].train)
    for name in ("persona", "tools"):
        c = corpora[name]
        assert (len(c.train), len(c.held_out), len(c.probes)) == (120, 30, 10)
        trained = {_request(t) for t in c.train}
        held = [_request(t) for t in c.held_out]
        assert len(set(held)) == 30 and not set(held) & trained
        # the plain answers of the base are the training requests, never the held-out ones
        plain = corpora["plain-replies" if name == "persona" else "plain-calls"]
        assert {_request(t) for t in plain.train} == trained
        assert all(p["prompt"].startswith("user: ") for p in c.probes)
        assert not {_request(p["prompt"]) for p in c.probes} & trained


def test_voices_and_calls() -> None:
    corpora = generate_corpora(1, SMALL)
    for text in corpora["persona"].train + corpora["persona"].held_out:
        reply = text.split(PERSONA_PREFIX, 1)[1]
        assert score_contains(reply, SIGNATURE_PHRASES).passed, text
    for text in corpora["plain-replies"].train:
        reply = text.split(PERSONA_PREFIX, 1)[1]
        assert reply.startswith(" ok. ") and score_contains(reply, SIGNATURE_PHRASES).met == 0
    for text in corpora["plain-calls"].train:
        assert "{" not in text and TOOLS_PREFIX in text
    for text in corpora["tools"].train:
        call = json.loads(text.split(TOOLS_PREFIX, 1)[1])
        assert set(call) == {"name", "arguments"} and call["name"] in {
            "create_task", "complete_task", "delete_task", "list_tasks", "set_priority", "move_task"
        }  # fmt: skip


def test_plain_call_words() -> None:
    call = {"name": "move_task", "arguments": {"title": "call mom", "due": "friday"}}
    assert plain_call(call) == "move task title call mom due friday"
    assert plain_call({"name": "list_tasks", "arguments": {}}) == "list tasks"


def test_eval_files_parse_and_score_the_held_out_answers_as_right(tmp_path: Path) -> None:
    corpora = generate_corpora(2, SMALL)
    files = write_eval_files(corpora, tmp_path)
    assert sorted(files.data) == ["general", "persona", "tools"]
    assert files.data_specs()[0] == f"general={tmp_path / 'general.jsonl'}"
    for name, path in files.data.items():
        ds = load_data_set(name, path)
        assert [d.text for d in ds.documents] == corpora[name].held_out
    kinds = {name: kind for name, (kind, _) in files.probes.items()}
    assert kinds == {"persona_probes": "contains", "tools_probes": "tool-calls"}
    tools = load_probe_set("tool-calls", "tools_probes", files.probes["tools_probes"][1])
    persona = load_probe_set("contains", "persona_probes", files.probes["persona_probes"][1])
    assert len(tools.probes) == len(persona.probes) == 10
    # the held-out answer to each probe scores full marks: the probes test the skill itself
    for probe, text in zip(tools.probes, corpora["tools"].held_out):
        assert probe.prompt is not None and text.startswith(probe.prompt)
        s = score_tool_call(text[len(probe.prompt) :], probe.expected or {})
        assert (s.parsed, s.name, s.arguments) == (True, True, 1.0)
    for probe, text in zip(persona.probes, corpora["persona"].held_out):
        assert probe.prompt is not None and text.startswith(probe.prompt)
        assert score_contains(text[len(probe.prompt) :], probe.must_contain).passed


@pytest.mark.parametrize("size", sorted(SIZES))
def test_demo_sizes_have_enough_distinct_requests(size: str) -> None:
    corpora = generate_corpora(0, SIZES[size])
    assert len(corpora["tools"].held_out) == SIZES[size].held_out
