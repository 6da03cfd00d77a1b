"""The base's own answers to the other skill's requests, replayed while training an adapter.

An adapter trained on its skill alone answers *every* request its way: the tool adapter writes
JSON calls to requests that came without tools, and in a merge that JSON overwrites the
persona's replies. Each adapter therefore also trains on the base's own greedy answers to the
other skill's training requests (the persona's requests for the tool adapter, the tool
requests for the persona adapter): on those the base's answer is already the adapter's
target, so its delta learns to stay out of the other skill's context. The answers are
generated once with batched greedy decoding and cached under a key of the base and the
requests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from alloy.demo.real.data import Messages


def replay_key(base_key: str, prompts: list[Messages], max_new_tokens: int) -> str:
    blob = json.dumps(["1", base_key, prompts, max_new_tokens], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def base_answers(
    base: Path, prompts: list[Messages], max_new_tokens: int, batch_size: int, progress: Any
) -> list[str]:
    """The base's greedy answers to ``prompts`` (conversations ending with the user's turn)."""
    from alloy.evaluate.models import EvalOptions, loaded, render_chat
    from alloy.evaluate.probes import generate

    options = EvalOptions(batch_size=batch_size, max_new_tokens=max_new_tokens)
    with loaded("base", base, options) as lm:
        ids = [
            list(
                lm.tokenizer(
                    render_chat(lm.tokenizer, m, generation_prompt=True, where="replay"),
                    add_special_tokens=False,
                )["input_ids"]
            )
            for m in prompts
        ]
        out = generate(
            lm, ids, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
        )
    return [o.strip() for o in out]


def cached_answers(
    cache: Path,
    base: Path,
    base_key: str,
    prompts: list[Messages],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: Any = None,
) -> tuple[list[Messages], bool]:
    """``prompts`` completed with the base's answers; True when they came from the cache."""
    path = cache / f"replay-{replay_key(base_key, prompts, max_new_tokens)}.json"
    if path.is_file():
        answers, hit = json.loads(path.read_text(encoding="utf-8")), True
    else:
        answers, hit = base_answers(base, prompts, max_new_tokens, batch_size, progress), False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(answers) + "\n", encoding="utf-8")
        tmp.replace(path)
    done = [[*m, {"role": "assistant", "content": a}] for m, a in zip(prompts, answers)]
    return done, hit
