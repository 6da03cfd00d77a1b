"""The demo's three corpora, generated from templates with a seeded `random.Random`.

- **general**: short paragraphs about a small town (people, objects, places, times);
- **persona**: an encouraging task-manager assistant, ``user: ...\\nassistant: ...``; every
  reply opens with a greeting that calls the user "friend" and ends with "You've got this!";
- **tools**: requests to a small task API, ``user: ...\\ncall: {"name": ..., "arguments": ...}``;
- **plain replies** and **plain calls**: the persona's and the tools' training requests
  answered the way the base model learns to answer them: replies in a plain voice ("ok. ...")
  without the signature phrases, and calls in plain words (``call: move task title call mom
  due friday``) instead of JSON; so the voice and the JSON calls are the specialists' skills.

Each corpus has a training split, a held-out split (perplexity, written as ``{"text": ...}``
JSONL for `alloy.evaluate`) and probes drawn from the held-out split (``contains`` probes for
the persona, ``tool-calls`` probes for the tools). Held-out requests never occur in training:
examples are deduplicated by their prompt before the split.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloy.errors import UsageError

SIGNATURE_PHRASES = ("friend", "you've got this")
PERSONA_PREFIX, TOOLS_PREFIX = "\nassistant:", "\ncall:"

TITLES = (
    "buy milk", "call mom", "pay rent", "book flights", "water the plants", "fix the bike",
    "clean the kitchen", "send the invoice", "walk the dog", "finish the report", "wash the car",
    "bake bread", "mow the lawn", "file taxes", "feed the cat", "practice piano",
)  # fmt: skip
DAYS = (
    "today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday",
    "saturday", "sunday",
)  # fmt: skip
PRIORITIES = ("low", "medium", "high")

# ---------------------------------------------------------------- general text

_NAMES = (
    "anna", "ben", "clara", "david", "elena", "frank", "grace", "hugo", "iris", "jonas",
    "karl", "lena", "marco", "nina", "oscar", "paula", "quinn", "rosa", "sven", "tara",
    "ugo", "vera", "walt", "xena", "yusuf", "zoe",
)  # fmt: skip
_ADJ = (
    "old", "small", "bright", "quiet", "green", "heavy", "warm", "narrow", "round", "tall",
    "red", "soft", "broken", "shiny", "wooden", "blue",
)  # fmt: skip
_NOUNS = (
    "lamp", "table", "boat", "letter", "garden", "bridge", "window", "basket", "map", "clock",
    "bench", "kettle", "ladder", "coat", "drum", "violin", "bucket", "mirror", "wagon", "kite",
    "jar", "chair", "rope", "hat",
)  # fmt: skip
_PLACES = (
    "market", "harbor", "library", "station", "school", "bakery", "square", "museum",
    "river", "hill", "farm", "castle", "forest", "church",
)  # fmt: skip
_VERBS = (
    "painted", "carried", "found", "opened", "repaired", "sold", "watched", "cleaned",
    "moved", "borrowed",
)  # fmt: skip
_TIMES = ("in the morning", "after lunch", "at noon", "before dinner", "late at night", "on sunday")
_WEATHER = ("rain", "snow", "wind", "fog", "sun")
_GOODS = (
    "apples", "rice", "soap", "candles", "nails", "paper", "tea", "onions", "string", "honey",
    "flour", "pepper", "glue", "cheese",
)  # fmt: skip


def _general(r: random.Random) -> tuple[str, str]:
    """A short story whose later sentences repeat its people, things, places and lists (so
    that predicting it takes attention to the context)."""
    name, other = r.sample(_NAMES, 2)
    adj, noun, place, place2 = r.choice(_ADJ), r.choice(_NOUNS), *r.sample(_PLACES, 2)
    goods = r.sample(_GOODS, r.randrange(2, 5))
    opening = (
        f"{name} {r.choice(_VERBS)} the {adj} {noun} near the {place} {r.choice(_TIMES)}.",
        f"there was {r.choice(_WEATHER)} over the {place}, so {name} stayed home with the {noun}.",
        f"{name} and {other} walked to the {place} to see the {adj} {noun}.",
        f"{name} wrote a list for the {place}: {', '.join(goods)}.",
    )[r.randrange(4)]
    later = [
        f"the {noun} at the {place} is {adj} and very {r.choice(_ADJ)}.",
        f"{other} asked {name} about the {adj} {noun}.",
        f"later, {name} took the {adj} {noun} to the {place2}.",
        f"{name} counted {r.randrange(2, 10)} {noun}s in the {place2}.",
        f"everyone at the {place2} said the {adj} {noun} belonged to {name}.",
        f"at the {place}, {name} bought {', '.join(goods)}.",
    ]
    r.shuffle(later)
    text = " ".join([opening, *later[: r.randrange(1, 4)]])
    return text, text


# ---------------------------------------------------------------- persona

_OPENERS = ("great news, friend!", "love that, friend!", "oh, friend,", "nice one, friend!")
_CHEERS = (
    "small steps add up.",
    "progress, not perfection.",
    "every checkmark counts.",
    "one thing at a time.",
)


def _persona(r: random.Random) -> tuple[str, str, str]:
    """(request, persona-voiced text, the same reply in a plain voice without the signature)."""
    t, t2, day = r.choice(TITLES), r.choice(TITLES), r.choice(DAYS)
    k = r.randrange(5)
    if k == 0:
        req = r.choice((f"add {t} to my list for {day}", f"i need to {t} {day}"))
        body = f"i put {t} on your list for {day}."
    elif k == 1:
        req = f"i have to {t} and {t2} and i feel stuck"
        body = f"start with {t}, then {t2}."
    elif k == 2:
        req = r.choice((f"i finished {t}", f"done with {t}!"))
        body = f"crossing off {t} is a real win."
    elif k == 3:
        req = f"i forgot to {t}"
        body = f"no worries, let us move {t} to {day}."
    else:
        req = f"should i {t} or {t2} first?"
        body = f"try {t} first, it will make {t2} easier."
    reply = f"{r.choice(_OPENERS)} {body} {r.choice(_CHEERS)} you've got this!"
    prompt = f"user: {req}{PERSONA_PREFIX}"
    return req, f"{prompt} {reply}", f"{prompt} ok. {body}"


# ---------------------------------------------------------------- tools


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def _tools(r: random.Random) -> tuple[str, str, dict[str, Any], str]:
    """(request, text with the JSON call, the call, text with the call in plain words)."""
    t, day, prio = r.choice(TITLES), r.choice(DAYS), r.choice(PRIORITIES)
    q = f'"{t}"'  # requests quote the title, as users of a task app do
    k = r.randrange(7)
    if k == 0:
        req = r.choice(
            (f"add {q} to my list for {day}", f"remind me to {q} {day}", f"i need to {q} by {day}")
        )
        call = tool_call("create_task", title=t, due=day)
    elif k == 1:
        req = r.choice((f"add {q} to my list", f"new task: {q}", f"please track {q}"))
        call = tool_call("create_task", title=t)
    elif k == 2:
        req = r.choice((f"mark {q} as done", f"i finished {q}", f"check off {q}"))
        call = tool_call("complete_task", title=t)
    elif k == 3:
        req = r.choice((f"remove {q} from my list", f"delete the task {q}", f"forget about {q}"))
        call = tool_call("delete_task", title=t)
    elif k == 4:
        req = r.choice((f"what is on my list for {day}?", f"show my tasks for {day}"))
        call = tool_call("list_tasks", day=day)
    elif k == 5:
        req = r.choice((f"make {q} {prio} priority", f"set {q} to {prio} priority"))
        call = tool_call("set_priority", title=t, priority=prio)
    else:
        req = r.choice((f"move {q} to {day}", f"push {q} to {day}"))
        call = tool_call("move_task", title=t, due=day)
    return (
        req,
        f"user: {req}{TOOLS_PREFIX} {json.dumps(call)}",
        call,
        f"user: {req}{TOOLS_PREFIX} {plain_call(call)}",
    )


def plain_call(call: dict[str, Any]) -> str:
    """A call in plain words: ``move task title call mom due friday``."""
    args = " ".join(f"{k} {v}" for k, v in call["arguments"].items())
    return f"{call['name'].replace('_', ' ')} {args}".strip()


# ---------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Corpus:
    """One corpus: training texts, held-out texts, and probes built from held-out examples."""

    name: str
    train: list[str]
    held_out: list[str]
    probes: list[dict[str, Any]] = field(default_factory=list)
    probe_kind: str | None = None  # "contains" or "tool-calls"


@dataclass(frozen=True)
class CorpusSizes:
    general_train: int
    skill_train: int
    held_out: int
    probes: int


SIZES = {
    "full": CorpusSizes(general_train=3000, skill_train=640, held_out=100, probes=40),
    "small": CorpusSizes(general_train=1500, skill_train=480, held_out=60, probes=24),
}


def _unique(
    make: Callable[[random.Random], tuple[Any, ...]], r: random.Random, n: int, what: str
) -> list[tuple[Any, ...]]:
    """``n`` examples with distinct keys (the first element: the prompt, or the text)."""
    seen: dict[str, tuple[Any, ...]] = {}
    for _ in range(50 * n):
        ex = make(r)
        seen.setdefault(ex[0], ex)
        if len(seen) == n:
            out = list(seen.values())
            r.shuffle(out)  # templates that run out of variety early do not pile up in front
            return out
    raise UsageError(f"the {what} templates yield fewer than {n} distinct examples; ask for fewer.")


def generate_corpora(seed: int, sizes: CorpusSizes) -> dict[str, Corpus]:
    """The corpora, a pure function of ``seed`` and ``sizes``: general, persona, tools, and
    plain-replies and plain-calls (the skills' training requests answered in the base's plain
    way; training splits only)."""
    held, probes = sizes.held_out, sizes.probes
    n_gen, n_skill = sizes.general_train + held, sizes.skill_train + held
    general = _unique(_general, random.Random(f"general-{seed}"), n_gen, "general")
    persona = _unique(_persona, random.Random(f"persona-{seed}"), n_skill, "persona")
    tools = _unique(_tools, random.Random(f"tools-{seed}"), n_skill, "tools")
    persona_probes = [
        {"prompt": f"user: {req}{PERSONA_PREFIX}", "must_contain": list(SIGNATURE_PHRASES)}
        for req, *_ in persona[-held:][:probes]
    ]
    tool_probes = [
        {"prompt": f"user: {req}{TOOLS_PREFIX}", "expected": call}
        for req, _, call, _ in tools[-held:][:probes]
    ]
    return {
        "general": Corpus(
            "general", [e[1] for e in general[:-held]], [e[1] for e in general[-held:]]
        ),
        "persona": Corpus(
            "persona",
            [e[1] for e in persona[:-held]],
            [e[1] for e in persona[-held:]],
            persona_probes,
            "contains",
        ),
        "tools": Corpus(
            "tools",
            [e[1] for e in tools[:-held]],
            [e[1] for e in tools[-held:]],
            tool_probes,
            "tool-calls",
        ),
        "plain-replies": Corpus("plain-replies", [e[2] for e in persona[:-held]], []),
        "plain-calls": Corpus("plain-calls", [e[3] for e in tools[:-held]], []),
    }


@dataclass(frozen=True)
class EvalFiles:
    """The held-out files in `alloy.evaluate`'s formats."""

    data: dict[str, Path]  # set name -> {"text": ...} JSONL
    probes: dict[str, tuple[str, Path]]  # set name -> (probe kind, JSONL)

    def data_specs(self) -> list[str]:
        return [f"{name}={path}" for name, path in self.data.items()]

    def probe_specs(self) -> list[tuple[str, str]]:
        return [(kind, f"{name}={path}") for name, (kind, path) in self.probes.items()]


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_eval_files(corpora: dict[str, Corpus], out: Path) -> EvalFiles:
    """Write each held-out split as ``NAME.jsonl`` and each probe set as ``NAME_probes.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    data, probes = {}, {}
    for c in corpora.values():
        if not c.held_out:
            continue
        data[c.name] = out / f"{c.name}.jsonl"
        _write_jsonl(data[c.name], [{"text": t} for t in c.held_out])
        if c.probes and c.probe_kind is not None:
            name = f"{c.name}_probes"
            probes[name] = (c.probe_kind, out / f"{name}.jsonl")
            _write_jsonl(probes[name][1], c.probes)
    return EvalFiles(data, probes)
