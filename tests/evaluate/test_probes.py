"""Probe scoring on constructed outputs, and greedy generation against a plain argmax loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoints import ModelSet

from alloy.evaluate.data import load_probe_set
from alloy.evaluate.models import EvalOptions, LoadedModel, load
from alloy.evaluate.probes import (
    contains_metrics,
    first_json_object,
    generate,
    run_probe_sets,
    run_probes,
    score_contains,
    score_tool_call,
    tool_call_metrics,
)

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}


@pytest.mark.parametrize(
    ("output", "parsed", "name", "args"),
    [
        ('{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}', True, True, 1.0),
        # trailing text, a float equal to the int, and a fenced block are fine
        (
            'call: {"name": "get_weather", "arguments": {"days": 3.0, "city": "Paris"}} done',
            True,
            True,
            1.0,
        ),
        (
            '```json\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n```',
            True,
            True,
            1.0,
        ),
        # OpenAI shape with arguments as a JSON string
        (
            '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"days\\": 3}"}}',
            True,
            True,
            1.0,
        ),
        # one of two arguments wrong: 1/2
        ('{"name": "get_weather", "arguments": {"city": "Lyon", "days": 3}}', True, True, 0.5),
        # one missing: 1/2; one extra besides both right: 2/3
        ('{"name": "get_weather", "arguments": {"city": "Paris"}}', True, True, 0.5),
        (
            '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "unit": "C"}}',
            True,
            True,
            2 / 3,
        ),
        # a boolean is not a number
        ('{"name": "get_weather", "args": {"city": "Paris", "days": true}}', True, True, 0.5),
        # wrong function: arguments do not count
        ('{"name": "get_time", "arguments": {"city": "Paris", "days": 3}}', True, False, 0.0),
        ('{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}', False, False, 0.0),
        ("get_weather(city='Paris', days=3)", False, False, 0.0),
        ("[1, 2]", False, False, 0.0),
    ],
)
def test_tool_call_scores(output: str, parsed: bool, name: bool, args: float) -> None:
    s = score_tool_call(output, WEATHER)
    assert (s.parsed, s.name) == (parsed, name)
    assert s.arguments == pytest.approx(args)


def test_tool_call_without_arguments_and_metrics() -> None:
    assert score_tool_call('{"name": "now"}', {"name": "now", "arguments": {}}).arguments == 1.0
    assert (
        score_tool_call('{"name": "now", "arguments": {"tz": 1}}', {"name": "now"}).arguments == 0.0
    )
    scores = [
        score_tool_call(
            '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}', WEATHER
        ),
        score_tool_call('{"name": "get_weather", "arguments": {"city": "Paris"}}', WEATHER),
        score_tool_call('{"name": "x"}', WEATHER),
        score_tool_call("no json", WEATHER),
    ]
    m = tool_call_metrics(scores)
    assert m == {"json": 3 / 4, "name": 2 / 4, "arguments": (1.0 + 0.5) / 4, "exact": 1 / 4}
    assert first_json_object('a {"b": {"c": 1}} {"d": 2}') == {"b": {"c": 1}}


def test_contains_scores() -> None:
    out = "Arr, matey! The treasure be buried."
    s = score_contains(out, ["arr", "treasure"], ["As an AI"])
    assert (s.met, s.total, s.passed) == (3, 3, True)
    s = score_contains(out, ["arr", "Parrot"], ["matey"])
    assert (s.met, s.total, s.passed) == (1, 3, False)
    s = score_contains(out, ["arr"], case_sensitive=True)
    assert (s.met, s.passed) == (0, False)
    m = contains_metrics([score_contains(out, ["Arr"]), score_contains(out, ["x", "Arr"])])
    assert m == {"pass": 0.5, "phrases": 2 / 3}


@pytest.fixture(scope="module")
def lm(llama_models: ModelSet) -> LoadedModel:
    return load("ft1", llama_models.ft1, EvalOptions())


def naive_greedy(lm: LoadedModel, ids: list[int], n: int) -> str:
    eos = lm.model.generation_config.eos_token_id
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(lm.model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == eos:
                break
            out.append(nxt)
    return lm.tokenizer.decode(out, skip_special_tokens=True)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_greedy_generation_matches_argmax_loop(lm: LoadedModel, batch_size: int) -> None:
    prompts = [[10, 11, 12], [40], [7, 8, 9, 20, 30], [99, 98]]
    got = generate(lm, prompts, max_new_tokens=6, batch_size=batch_size)
    assert got == [naive_greedy(lm, p, 6) for p in prompts]


def test_run_probes_scores_the_generated_text(lm: LoadedModel, tmp_path: Path) -> None:
    prompt = "w6 w7 w8"
    expected_text = naive_greedy(lm, [10, 11, 12], 5)
    first = expected_text.split()[0]
    f = tmp_path / "voice.jsonl"
    lines = [
        {"prompt": prompt, "must_contain": [first]},
        {"prompt": prompt, "must_contain": [first], "must_not_contain": [first]},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines))
    res = run_probes(lm, load_probe_set("contains", "voice", f), EvalOptions(max_new_tokens=5))
    assert res.metrics == {"pass": 0.5, "phrases": 2 / 3}
    assert res.examples[0] == {"prompt": prompt, "output": expected_text}


def test_probe_sets_generated_together_give_each_set_its_own_answers(
    lm: LoadedModel, tmp_path: Path
) -> None:
    """Two sets of different prompt lengths in one generation (sorted longest first, batches
    of 2): each answer, metric and example is the one the set gets alone."""
    voice, calls = tmp_path / "voice.jsonl", tmp_path / "calls.jsonl"
    prompts = ["w6 w7 w8", "w1", "w3 w4 w5 w6 w7 w9", "w2 w2"]
    answers = [naive_greedy(lm, list(lm.tokenizer(p)["input_ids"]), 4) for p in prompts]
    voice.write_text(
        "\n".join(
            json.dumps({"prompt": p, "must_contain": [a.split()[0]]})
            for p, a in zip(prompts[:3], answers)
        )
    )
    calls.write_text(json.dumps({"prompt": prompts[3], "expected": WEATHER}))
    sets = [
        load_probe_set("contains", "voice", voice),
        load_probe_set("tool-calls", "calls", calls),
    ]
    options = EvalOptions(max_new_tokens=4, batch_size=2)
    together = run_probe_sets(lm, sets, options)
    assert together == [run_probes(lm, s, options) for s in sets]
    assert together[0].metrics == {"pass": 1.0, "phrases": 1.0}
    assert [e["output"] for e in together[0].examples] == answers[:3]
    assert together[1].examples[0]["output"] == answers[3]
