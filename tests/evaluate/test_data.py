"""Data and probe files: the documented formats parse; bad lines name the file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloy.errors import EvalDataError
from alloy.evaluate.data import load_data_set, load_probe_set, parse_named
from alloy.evaluate.run import load_sets


def _jsonl(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_named_specs() -> None:
    assert parse_named("persona=data/held_out.jsonl") == ("persona", Path("data/held_out.jsonl"))
    assert parse_named("data/held_out.jsonl") == ("held_out", Path("data/held_out.jsonl"))
    assert parse_named("a/b=c.txt") == ("b=c", Path("a/b=c.txt"))  # not a name: a path
    assert parse_named(("x", "y.txt")) == ("x", Path("y.txt"))


def test_data_formats(tmp_path: Path) -> None:
    f = _jsonl(
        tmp_path / "mixed.jsonl",
        {"text": "hello there", "id": 7},
        "",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    )
    ds = load_data_set("m", f)
    assert [d.text for d in ds.documents] == ["hello there", None]
    assert ds.documents[1].messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    assert ds.has_chat
    txt = tmp_path / "plain.txt"
    txt.write_text("one long document\n\nwith paragraphs\n")
    assert load_data_set("p", txt).documents[0].text == "one long document\n\nwith paragraphs\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"txt": "x"}',
            r"bad.jsonl:2: each line needs exactly one of `text` or `messages` \(keys found: txt\)",
        ),
        ('{"text": ""}', "bad.jsonl:2: `text` must be a non-empty string"),
        ('{"messages": [{"role": "user"}]}', r"bad.jsonl:2: messages\[0\] must be an object"),
        ("[1, 2]", "bad.jsonl:2: each line must be a JSON object"),
        ('{"text": "x"', "bad.jsonl:2: not valid JSON"),
    ],
)
def test_bad_data_lines(tmp_path: Path, line: str, message: str) -> None:
    f = _jsonl(tmp_path / "bad.jsonl", {"text": "fine"}, line)
    with pytest.raises(EvalDataError, match=message):
        load_data_set("bad", f)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no such file"):
        load_data_set("x", tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(EvalDataError, match="holds no records"):
        load_data_set("x", tmp_path / "empty.jsonl")


def test_probe_formats(tmp_path: Path) -> None:
    tools = _jsonl(
        tmp_path / "tools.jsonl",
        {
            "prompt": "weather in Paris?",
            "expected": {"name": "get_weather", "arguments": {"city": "Paris"}},
        },
        {"messages": [{"role": "user", "content": "time?"}], "expected": {"name": "now"}, "id": 2},
    )
    ps = load_probe_set("tool-calls", "tools", tools)
    assert ps.probes[1].expected == {"name": "now", "arguments": {}} and ps.probes[1].id == "2"
    voice = _jsonl(
        tmp_path / "voice.jsonl",
        {"prompt": "Hello", "must_contain": ["Arr"], "must_not_contain": "As an AI"},
    )
    p = load_probe_set("contains", "voice", voice).probes[0]
    assert (p.must_contain, p.must_not_contain, p.case_sensitive) == (
        ("Arr",),
        ("As an AI",),
        False,
    )


@pytest.mark.parametrize(
    ("kind", "line", "message"),
    [
        ("contains", {"prompt": "x", "must_contian": ["a"]}, "unknown key.*must_contian"),
        ("contains", {"prompt": "x"}, "give `must_contain` or `must_not_contain`"),
        (
            "contains",
            {"prompt": "x", "must_contain": ["a"], "case_sensitive": "yes"},
            "true or false",
        ),
        ("tool-calls", {"prompt": "x", "expected": "get_weather"}, "`expected` must be an object"),
        ("tool-calls", {"prompt": "x", "expected": {"name": "f", "args": {}}}, "nothing else"),
        ("tool-calls", {"expected": {"name": "f"}}, "exactly one of `prompt` or `messages`"),
    ],
)
def test_bad_probe_lines(tmp_path: Path, kind: str, line: dict, message: str) -> None:
    f = _jsonl(tmp_path / "p.jsonl", line)
    with pytest.raises(EvalDataError, match=f"p.jsonl:1: .*{message}"):
        load_probe_set(kind, "p", f)


def test_set_names_are_unique(tmp_path: Path) -> None:
    a = _jsonl(tmp_path / "a.jsonl", {"text": "x"})
    with pytest.raises(EvalDataError, match="two evaluation sets are named 'a'"):
        load_sets([f"a={a}", str(a)])
