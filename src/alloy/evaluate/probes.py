"""Task probes: greedy generation on prompts, scored by pure functions of the output text.

``tool-calls`` metrics (each the mean over the prompts, in [0, 1], higher is better):

- ``json``: the output holds a JSON object (from its first ``{``, trailing text allowed);
- ``name``: that object calls the expected function (``name``, ``function``, ``tool``, or
  OpenAI's ``{"function": {"name", "arguments"}}``);
- ``arguments``: with the right name, the share of argument slots that are right:
  ``correct / (expected + unexpected)``, where an expected argument is correct when the output
  gives the same JSON value (``1`` equals ``1.0``, ``true`` is not ``1``) and every argument the
  output adds beyond the expected ones counts as a wrong slot. A call that expects no argument
  and gets none scores 1. Arguments given as a JSON string are parsed;
- ``exact``: the share of outputs that are exactly the expected call (right name, every
  argument right, none added: an ``arguments`` score of 1).

``contains`` metrics: ``pass``, the share of outputs meeting all their constraints, and
``phrases``, the share of constraints met (each ``must_contain`` phrase present, each
``must_not_contain`` phrase absent; substring match, ignoring case unless ``case_sensitive``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from alloy.evaluate.data import Probe, ProbeSet
from alloy.evaluate.models import EvalOptions, LoadedModel, pad_id, render_chat

EXAMPLES_KEPT = 3


@dataclass(frozen=True)
class ToolCallScore:
    parsed: bool
    name: bool
    arguments: float


@dataclass(frozen=True)
class ContainsScore:
    met: int
    total: int

    @property
    def passed(self) -> bool:
        return self.met == self.total


def first_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object starting at the first ``{`` of ``text``, or None."""
    i = text.find("{")
    if i < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, i)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def call_parts(obj: dict[str, Any]) -> tuple[str | None, Any]:
    """(function name, arguments) of a call object in the common shapes."""
    fn = obj.get("function")
    if isinstance(fn, dict):
        name, args = fn.get("name"), fn.get("arguments", fn.get("parameters"))
    else:
        name = next((obj[k] for k in ("name", "function", "tool") if k in obj), None)
        args = next((obj[k] for k in ("arguments", "args", "parameters") if k in obj), None)
    if isinstance(args, str):
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args)
    return (name if isinstance(name, str) else None), args


def same_json(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, booleans only equal booleans, containers recursively."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def score_tool_call(output: str, expected: dict[str, Any]) -> ToolCallScore:
    """Score one generated ``output`` against ``{"name": ..., "arguments": {...}}``."""
    obj = first_json_object(output)
    if obj is None:
        return ToolCallScore(False, False, 0.0)
    name, args = call_parts(obj)
    if name != expected["name"]:
        return ToolCallScore(True, False, 0.0)
    want: dict[str, Any] = expected.get("arguments", {})
    got: dict[str, Any] = args if isinstance(args, dict) else {}
    correct = sum(1 for k, v in want.items() if k in got and same_json(got[k], v))
    slots = len(want) + sum(1 for k in got if k not in want)
    return ToolCallScore(True, True, correct / slots if slots else 1.0)


def score_contains(
    output: str,
    must_contain: tuple[str, ...] | list[str],
    must_not_contain: tuple[str, ...] | list[str] = (),
    case_sensitive: bool = False,
) -> ContainsScore:
    """Count the constraints ``output`` meets: phrases present, forbidden phrases absent."""

    def norm(s: str) -> str:
        return s if case_sensitive else s.casefold()

    text = norm(output)
    met = sum(norm(p) in text for p in must_contain)
    met += sum(norm(p) not in text for p in must_not_contain)
    return ContainsScore(met, len(must_contain) + len(must_not_contain))


def tool_call_metrics(scores: list[ToolCallScore]) -> dict[str, float]:
    n = len(scores)
    return {
        "json": sum(s.parsed for s in scores) / n,
        "name": sum(s.name for s in scores) / n,
        "arguments": sum(s.arguments for s in scores) / n,
        "exact": sum(s.name and s.arguments == 1.0 for s in scores) / n,
    }


def contains_metrics(scores: list[ContainsScore]) -> dict[str, float]:
    return {
        "pass": sum(s.passed for s in scores) / len(scores),
        "phrases": sum(s.met for s in scores) / sum(s.total for s in scores),
    }


METRICS = {"tool-calls": ("json", "name", "arguments", "exact"), "contains": ("pass", "phrases")}


def prompt_ids(lm: LoadedModel, probe: Probe, where: str) -> list[int]:
    if probe.messages is not None:
        text = render_chat(lm.tokenizer, probe.messages, generation_prompt=True, where=where)
        return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(lm.tokenizer(probe.prompt)["input_ids"])


def end_ids(lm: LoadedModel) -> set[int]:
    """The token ids that end a generated answer (the generation config's and the
    tokenizer's end-of-sequence tokens)."""
    ids: set[int] = set()
    config = getattr(lm.model, "generation_config", None)
    for cand in (getattr(config, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(cand, int):
            ids.add(cand)
        elif isinstance(cand, list | tuple):
            ids.update(c for c in cand if isinstance(c, int))
    return ids


@torch.inference_mode()
def generate(
    lm: LoadedModel,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: Any = None,
) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded batches), decoded without
    special tokens."""
    pad = pad_id(lm.tokenizer)
    stop = end_ids(lm)
    device = lm.device
    outputs: list[str] = []
    if progress is not None:
        progress.reset(total=len(prompts))
    for b in range(0, len(prompts), batch_size):
        batch = prompts[b : b + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        out = lm.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
        )
        for row in out[:, width:].tolist():
            end = next((i for i, t in enumerate(row) if t in stop), len(row))
            row = row[:end]  # after its end a row holds only padding
            outputs.append(lm.tokenizer.decode(row, skip_special_tokens=True))
        if progress is not None:
            progress.update(len(batch))
    return outputs


@dataclass(frozen=True)
class ProbeResult:
    metrics: dict[str, float]
    examples: list[dict[str, Any]]  # the first prompts with their outputs, for the report


def run_probes(
    lm: LoadedModel, probes: ProbeSet, options: EvalOptions, progress: Any = None
) -> ProbeResult:
    return run_probe_sets(lm, [probes], options, progress)[0]


def run_probe_sets(
    lm: LoadedModel, sets: list[ProbeSet], options: EvalOptions, progress: Any = None
) -> list[ProbeResult]:
    """Every probe set's results, their prompts generated together, longest first: a decode
    step of a small model on a CPU costs about the same for 10 rows as for 40, so fewer,
    fuller batches of similar lengths are faster. Each answer is the same as alone (greedy,
    masked padding)."""
    prompts = [
        (prompt_ids(lm, p, f"{s.path} (probe {i + 1})"), k)
        for k, s in enumerate(sets)
        for i, p in enumerate(s.probes)
    ]
    order = sorted(range(len(prompts)), key=lambda j: -len(prompts[j][0]))
    texts = generate(
        lm,
        [prompts[j][0] for j in order],
        max_new_tokens=options.max_new_tokens,
        batch_size=options.batch_size,
        progress=progress,
    )
    outputs: list[list[str]] = [[] for _ in sets]
    for j, text in sorted(zip(order, texts)):
        outputs[prompts[j][1]].append(text)
    return [score_probes(s, out) for s, out in zip(sets, outputs)]


def score_probes(probes: ProbeSet, outputs: list[str]) -> ProbeResult:
    """One probe set's metrics and first examples from its ``outputs``, in probe order."""
    examples = []
    for p, out in list(zip(probes.probes, outputs))[:EXAMPLES_KEPT]:
        examples.append({"prompt": p.prompt if p.prompt is not None else p.messages, "output": out})
    if probes.kind == "tool-calls":
        tc = [score_tool_call(o, p.expected or {}) for p, o in zip(probes.probes, outputs)]
        return ProbeResult(tool_call_metrics(tc), examples)
    cs = [
        score_contains(o, p.must_contain, p.must_not_contain, p.case_sensitive)
        for p, o in zip(probes.probes, outputs)
    ]
    return ProbeResult(contains_metrics(cs), examples)
