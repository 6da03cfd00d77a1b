"""Perplexity against a hand computation from the tiny model's logits (torch, no windowing)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from checkpoints import ModelSet

from alloy.errors import EvaluationError
from alloy.evaluate.data import DataSet, Document, load_data_set
from alloy.evaluate.models import EvalOptions, LoadedModel, load
from alloy.evaluate.perplexity import encode, perplexity, windows

# user -> w1, assistant -> w2; each turn ends with </s>
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}w1 {% else %}w2 {% endif %}"
    "{{ m['content'] }} </s> {% endfor %}{% if add_generation_prompt %}w2 {% endif %}"
)


def words(*ids: int) -> str:
    return " ".join(f"w{i - 4}" for i in ids)  # the tiny vocabulary: token id i is w{i-4}


@pytest.fixture(scope="module")
def lm(llama_models: ModelSet) -> LoadedModel:
    return load("base", llama_models.base, EvalOptions())


def nll_of(lm: LoadedModel, ids: list[int], targets: list[int], start: int = 0) -> list[float]:
    """-log p(ids[t] | ids[start:t]) for each t in targets, one plain forward pass each."""
    out = []
    with torch.no_grad():
        for t in targets:
            logits = lm.model(torch.tensor([ids[start:t]])).logits[0, -1]
            out.append(float(-torch.log_softmax(logits.double(), -1)[ids[t]]))
    return out


def full_nll(lm: LoadedModel, ids: list[int]) -> list[float]:
    """NLL of tokens 1..n-1 from one forward pass over the whole sequence."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], -1)
    return (-logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]).tolist()


def test_windows_score_every_token_once() -> None:
    # hand-written: window length 8, stride 3, 20 tokens
    assert windows(20, 8, 3) == [(0, 8, 1), (3, 11, 8), (6, 14, 11), (9, 17, 14), (12, 20, 17)]
    assert windows(5, 8, 3) == [(0, 5, 1)]
    assert windows(1, 8, 3) == []
    for length, m, s in [(50, 7, 1), (50, 7, 6), (33, 16, 8), (16, 16, 8), (17, 16, 15)]:
        scored = [t for _, e, f in windows(length, m, s) for t in range(f, e)]
        assert scored == list(range(1, length))
        assert all(e - b <= m and f - b >= m - s for b, e, f in windows(length, m, s)[1:])
    with pytest.raises(EvaluationError, match="less than the window length"):
        windows(20, 8, 8)


def test_single_window_matches_full_forward(lm: LoadedModel, tmp_path: Path) -> None:
    ids = [9, 17, 33, 4, 80, 81, 100, 5, 6, 77, 12]
    f = tmp_path / "one.txt"
    f.write_text(words(*ids))
    assert encode(lm.tokenizer, Document(text=f.read_text()), False, "x").ids == ids
    res = perplexity(lm, load_data_set("one", f), EvalOptions())
    expected = full_nll(lm, ids)
    assert res.tokens == len(ids) - 1
    assert res.nll_sum == pytest.approx(sum(expected), rel=1e-6)
    assert res.perplexity == pytest.approx(math.exp(sum(expected) / len(expected)), rel=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_sliding_windows_match_hand_computation(
    lm: LoadedModel, tmp_path: Path, batch_size: int
) -> None:
    long = [(7 * i + 3) % 120 + 4 for i in range(20)]
    short = [50, 60, 70, 80, 90]
    f = tmp_path / "two.jsonl"
    f.write_text("\n".join(json.dumps({"text": words(*d)}) for d in (long, short)) + "\n")
    opts = EvalOptions(max_length=8, stride=3, batch_size=batch_size)
    res = perplexity(lm, load_data_set("two", f), opts)
    # windows of the long document by hand: (context start, scored tokens)
    plan = [(0, range(1, 8)), (3, range(8, 11)), (6, range(11, 14)), (9, range(14, 17))]
    plan.append((12, range(17, 20)))
    expected = [x for start, ts in plan for x in nll_of(lm, long, list(ts), start)]
    expected += nll_of(lm, short, [1, 2, 3, 4])
    assert res.tokens == 19 + 4
    assert res.nll_sum == pytest.approx(sum(expected), rel=1e-6)
    assert res.perplexity == pytest.approx(math.exp(sum(expected) / 23), rel=1e-6)
    # windowed context is less than the full context: the value differs from one pass
    assert res.nll_sum != pytest.approx(sum(full_nll(lm, long)) + sum(expected[-4:]), rel=1e-6)


def test_deterministic(lm: LoadedModel, tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text(words(*[(5 * i) % 120 + 4 for i in range(40)]))
    ds = load_data_set("t", f)
    opts = EvalOptions(max_length=16, stride=5, batch_size=3)
    assert perplexity(lm, ds, opts) == perplexity(lm, ds, opts)


@pytest.fixture(scope="module")
def chat_lm(llama_models: ModelSet, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    d = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(llama_models.base, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = TEMPLATE
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return load("chat", d, EvalOptions())


CHAT = [
    {"role": "user", "content": "w10 w11"},
    {"role": "assistant", "content": "w12 w13"},
    {"role": "user", "content": "w14"},
    {"role": "assistant", "content": "w15 w16 w17"},
]
# w1 w10 w11 </s> w2 w12 w13 </s> w1 w14 </s> w2 w15 w16 w17 </s>
CHAT_IDS = [5, 14, 15, 2, 6, 16, 17, 2, 5, 18, 2, 6, 19, 20, 21, 2]
ASSISTANT_POSITIONS = [5, 6, 7, 12, 13, 14, 15]  # the replies and their </s>


@pytest.mark.parametrize("assistant_only", [False, True])
def test_chat_messages_with_template(
    chat_lm: LoadedModel, tmp_path: Path, assistant_only: bool
) -> None:
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps({"messages": CHAT}) + "\n")
    ds = load_data_set("chat", f)
    enc = encode(chat_lm.tokenizer, ds.documents[0], assistant_only, "x")
    assert enc.ids == CHAT_IDS
    res = perplexity(chat_lm, ds, EvalOptions(assistant_only=assistant_only))
    per_token = full_nll(chat_lm, CHAT_IDS)  # per_token[k] is the NLL of token k + 1
    wanted = ASSISTANT_POSITIONS if assistant_only else list(range(1, len(CHAT_IDS)))
    assert res.tokens == len(wanted)
    assert res.nll_sum == pytest.approx(sum(per_token[t - 1] for t in wanted), rel=1e-6)


def test_chat_data_without_template_is_a_clear_error(lm: LoadedModel, tmp_path: Path) -> None:
    ds = DataSet("c", tmp_path / "c.jsonl", [Document(messages=CHAT)])
    with pytest.raises(EvaluationError, match="no chat template"):
        perplexity(lm, ds, EvalOptions())


def test_stride_must_leave_context(lm: LoadedModel, tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text(words(10, 11, 12))
    with pytest.raises(EvaluationError, match="--stride 8 must be less"):
        perplexity(lm, load_data_set("t", f), EvalOptions(max_length=8, stride=8))
