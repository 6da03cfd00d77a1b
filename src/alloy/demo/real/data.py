"""The real demo's data: the tiny demo's corpora (`alloy.demo.corpora`) as chat conversations.

- **tools**: a system prompt that lists the task API (as tool-calling apps put their tools in
  the system prompt), the user's request, and the assistant's answer: one JSON call;
- **persona**: the user's request (no system prompt: the model's own default one) and the
  assistant's encouraging reply with the signature phrases;
- **general**: real English prose no adapter trains on, so that its perplexity measures
  what the adapters did to the base's general ability: paragraphs of the Python Language
  Reference that ship with every Python (`pydoc_data.topics`), a seeded sample. (The tiny
  demo's templated stories are no measure of a pretrained model's general ability: its
  perplexity on them is above 100.)
- **general replay**: other English prose, the docstrings of standard-library modules (none of
  which occurs in the Python Language Reference), trained on by each adapter with the plain
  language-model loss, as fine-tunes replay pre-training text so that a narrow skill does not
  cost the model its general ability. The held-out general set is never trained on.

Held-out requests never occur in training (`generate_corpora` deduplicates by request before
the split); the probes are drawn from the held-out split.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloy.demo.corpora import (
    PERSONA_PREFIX,
    SIGNATURE_PHRASES,
    TOOLS_PREFIX,
    CorpusSizes,
    EvalFiles,
    generate_corpora,
)
from alloy.errors import UsageError

Messages = list[dict[str, str]]
_CODE = (">>>", "{", "}", "[", "]", "=", "*")

TOOLS_SYSTEM = (
    "Tools: create_task, complete_task, delete_task, list_tasks, set_priority, move_task. "
    "Answer with a JSON call."
)


@dataclass(frozen=True)
class ChatData:
    """Training conversations of each skill, and the held-out sets."""

    train: dict[str, list[Messages]]  # skill -> conversations
    held_out: dict[str, list[Messages]]  # skill -> conversations
    general: list[str]  # held-out general text
    persona_probes: list[dict[str, Any]]
    tool_probes: list[dict[str, Any]]

    def key(self, skill: str) -> str:
        """A digest of one skill's training conversations."""
        return conversations_key(self.train[skill])


def conversations_key(conversations: list[Messages]) -> str:
    """A digest of conversations (the adapter cache's key)."""
    blob = json.dumps(conversations, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _split(text: str, prefix: str) -> tuple[str, str]:
    """``user: REQUEST<prefix> ANSWER`` -> (request, answer)."""
    head, _, answer = text.partition(prefix)
    return head.removeprefix("user: "), answer.strip()


def persona_chat(text: str) -> Messages:
    req, reply = _split(text, PERSONA_PREFIX)
    return [{"role": "user", "content": req}, {"role": "assistant", "content": reply}]


def tools_chat(text: str) -> Messages:
    req, call = _split(text, TOOLS_PREFIX)
    return [
        {"role": "system", "content": TOOLS_SYSTEM},
        {"role": "user", "content": req},
        {"role": "assistant", "content": call},
    ]


def chat_data(seed: int, sizes: CorpusSizes) -> ChatData:
    """The conversations, a pure function of ``seed`` and ``sizes``."""
    c = generate_corpora(seed, sizes)
    convert = {"persona": persona_chat, "tools": tools_chat}
    train = {s: [convert[s](t) for t in c[s].train] for s in convert}
    held = {s: [convert[s](t) for t in c[s].held_out] for s in convert}
    persona_probes = [
        {"messages": m[:-1], "must_contain": list(SIGNATURE_PHRASES)}
        for m in held["persona"][: sizes.probes]
    ]
    tool_probes = [
        {"messages": m[:-1], "expected": json.loads(m[-1]["content"])}
        for m in held["tools"][: sizes.probes]
    ]
    return ChatData(train, held, general_text(seed, sizes.held_out), persona_probes, tool_probes)


def general_text(seed: int, n: int) -> list[str]:
    """``n`` prose paragraphs (300 to 600 characters, no code) of `pydoc_data.topics`."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # a Python stripped of its documentation
        raise UsageError(
            "the real demo's general text comes from the Python documentation "
            f"(pydoc_data), which this Python lacks ({e}); install the full standard library."
        ) from e
    paragraphs = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            if (p := _prose(block, 300)) is not None:
                paragraphs.append(p)
    paragraphs = list(dict.fromkeys(paragraphs))  # some topics share a paragraph
    if len(paragraphs) < n:
        raise UsageError(
            f"the Python documentation has {len(paragraphs)} paragraphs; ask for fewer."
        )
    return random.Random(f"general-{seed}").sample(paragraphs, n)


# standard-library modules whose docstrings are the general replay text (imported without side
# effects; a sorted, fixed list so that the text is the same on every machine with one Python)
_REPLAY_MODULES = (
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "http.server",
    "imaplib",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "mailbox",
    "mimetypes",
    "multiprocessing",
    "numbers",
    "operator",
    "optparse",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "poplib",
    "pprint",
    "queue",
    "random",
    "reprlib",
    "sched",
    "secrets",
    "selectors",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "tokenize",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.dom.minidom",
    "zipfile",
    "zlib",
)


def _prose(block: str, shortest: int) -> str | None:
    p = " ".join(block.split())
    prose = p[:1].isupper() and p.endswith(".") and not any(c in p for c in _CODE)
    return p if shortest <= len(p) <= 600 and prose else None


def replay_text(seed: int, n: int, held_out: list[str]) -> list[str]:
    """``n`` prose paragraphs (200 to 600 characters) of standard-library docstrings, none of
    them in ``held_out``: the general text each adapter replays in training."""
    import importlib
    import warnings

    if n <= 0:
        return []
    paragraphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _REPLAY_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # a Python built without this module
                continue
            members = [getattr(module, a) for a in sorted(vars(module)) if not a.startswith("_")]
            for obj in (module, *members):
                if obj is not module and getattr(obj, "__module__", None) != name:
                    continue  # imported from elsewhere
                doc = getattr(obj, "__doc__", None)
                for block in re.split(r"\n\s*\n", doc if isinstance(doc, str) else ""):
                    if (p := _prose(block, 200)) is not None:
                        paragraphs.append(p)
    held = set(held_out)
    paragraphs = [p for p in dict.fromkeys(paragraphs) if p not in held]
    if len(paragraphs) < n:
        raise UsageError(
            f"the standard library's docstrings have {len(paragraphs)} paragraphs of prose; "
            "ask for less general replay."
        )
    return random.Random(f"replay-{seed}").sample(paragraphs, n)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_eval_files(data: ChatData, out: Path) -> EvalFiles:
    """The held-out sets in `alloy.evaluate`'s formats: chat ``messages`` for the skills (scored
    on the assistant turns), plain ``text`` for the general set, and the two probe sets."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.jsonl" for name in ("general", "persona", "tools")}
    _write_jsonl(files["general"], [{"text": t} for t in data.general])
    for skill in ("persona", "tools"):
        _write_jsonl(files[skill], [{"messages": m} for m in data.held_out[skill]])
    probes = {
        "persona_probes": ("contains", out / "persona_probes.jsonl"),
        "tools_probes": ("tool-calls", out / "tools_probes.jsonl"),
    }
    _write_jsonl(probes["persona_probes"][1], data.persona_probes)
    _write_jsonl(probes["tools_probes"][1], data.tool_probes)
    return EvalFiles(files, probes)


def write_training_files(
    sets: dict[str, list[Messages]], out: Path, replay: list[str] | None = None
) -> None:
    """Each skill's training conversations as JSONL (what the adapters were trained on), and
    the general replay text both adapters trained on (``general-replay.jsonl``)."""
    out.mkdir(parents=True, exist_ok=True)
    for skill, convs in sets.items():
        _write_jsonl(out / f"{skill}.jsonl", [{"messages": m} for m in convs])
    if replay:
        _write_jsonl(out / "general-replay.jsonl", [{"text": t} for t in replay])
