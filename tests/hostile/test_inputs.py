"""Hostile configs, evaluation files and reports: each a typed error with the file and the line
(or key), exit 1, no traceback, never a hang, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from alloy.evaluate.data import load_data_set, load_probe_set

from .harness import Case, Scene, Table, run_case, run_cli, snapshot

cases = Table()


def _bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _yaml_case(name: str, text: str | bytes, *says: str) -> None:
    def setup(s: Scene) -> Case:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        s.cfg.write_bytes(data)
        return Case(s.merge_args(), 1, [str(s.cfg), *says])

    setup.__name__ = "yaml_" + name
    cases(setup)


def _models(s: str = "") -> str:
    return "models:\n  - model: a\n  - model: b\n" + s


for name, text, says in [
    ("billion_laughs", _bomb(), ["expands to more than"]),
    ("billion_laughs_in_models", "merge_method: linear\n" + _bomb(8) + _models(), ["expands"]),
    (
        "recursive_sequence",
        "merge_method: linear\nmodels: &m [*m]\n",
        ["alias refers to the value"],
    ),
    ("recursive_mapping", "merge_method: linear\nparameters: &p {weight: *p}\n", ["alias"]),
    ("recursive_deep", "a: &x {b: {c: [*x]}}\n", ["alias refers"]),
    ("deep_flow_sequence", "models: " + "[" * 5000 + "]" * 5000 + "\n", ["nested more than"]),
    ("deep_flow_mapping", "a: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", ["nested more than"]),
    (
        "deep_block_mapping",
        "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v\n",
        ["nested more than", ":65:"],
    ),
    (
        "python_object_apply",
        "merge_method: !!python/object/apply:os.system ['true']\n",
        ["tag", ":1:"],
    ),
    ("python_name", "merge_method: !!python/name:os.system\n", ["tag"]),
    ("python_module", "merge_method: !!python/module:os\n", ["tag"]),
    ("python_object_new_mapping", "merge_method: !!python/object/new:os.X {a: 1}\n", ["tag"]),
    ("python_tuple", "models: !!python/tuple [a, b]\n", ["tag"]),
    ("yaml_set", "merge_method: linear\nmodels: !!set {a, b}\n", ["tag", ":2:"]),
    ("yaml_omap", "merge_method: linear\nmodels: !!omap [{a: 1}]\n", ["tag"]),
    ("custom_tag", "merge_method: !shell rm -rf /\n", ["tag"]),
    (
        "unhashable_list_key",
        "merge_method: linear\n? [a, b]\n: 1\n",
        ["key must be a plain value", ":2:"],
    ),
    ("unhashable_map_key", "{? {a: 1} : 2}\n", ["key must be a plain value"]),
    ("binary_garbage", bytes(range(256)) * 4, ["not UTF-8"]),
    ("latin1_text", "merge_method: lin\xe9ar\n".encode("latin-1"), ["not UTF-8", ":1:"]),
    ("nul_character", "merge_method: linear\n\0\n", ["not valid YAML", ":2:"]),
    ("control_character", "merge_method: linear\x07\n", ["not valid YAML"]),
    ("tabs_for_indentation", "models:\n\t- model: a\n", ["not valid YAML", ":2:"]),
    ("unclosed_quote", 'merge_method: "linear\n', ["not valid YAML"]),
    ("unclosed_flow", "models: [a, b\n", ["not valid YAML"]),
    ("undefined_alias", "merge_method: *nothing\n", ["not valid YAML"]),
    ("two_documents", "merge_method: linear\n---\nmerge_method: ties\n", ["not valid YAML"]),
    ("empty_file", "", ["mapping"]),
    ("only_comments", "# nothing\n", ["mapping"]),
    ("top_level_list", "- merge_method: linear\n", ["mapping"]),
    ("top_level_scalar", "linear\n", ["mapping"]),
    (
        "bad_timestamp",
        "merge_method: linear\nname: 2020-13-45\n" + _models(),
        ["unreadable value", ":2:"],
    ),
    ("bad_int", "merge_method: linear\nname: !!int abc\n" + _models(), ["unreadable value", ":2:"]),
    ("random_seed_a_string", "merge_method: dare_ties\nrandom_seed: seven\n", ["random_seed"]),
    ("random_seed_negative", "merge_method: dare_ties\nrandom_seed: -1\n", ["random_seed"]),
    ("random_seed_float", "merge_method: dare_ties\nrandom_seed: 1.5\n", ["random_seed"]),
    ("random_seed_bool", "merge_method: dare_ties\nrandom_seed: true\n", ["random_seed"]),
]:
    _yaml_case(name, text, *says)


@cases
def yaml_duplicate_key_strict(s: Scene) -> Case:
    """A key given twice is one mergekit ignores (YAML keeps the last; issue 14): under
    ``--strict`` it is an error naming its line."""
    s.cfg.write_text("merge_method: linear\nmerge_method: ties\n" + _models())
    return Case([*s.merge_args(), "--strict"], 1, [str(s.cfg), "twice", ":2:"])


@cases
def yaml_huge_file(s: Scene) -> Case:
    s.cfg.write_bytes(b"# " + b"x" * 10_000_001 + b"\n")
    return Case(s.merge_args(), 1, [str(s.cfg), "larger than"])


@cases
def yaml_config_is_a_fifo(s: Scene) -> Case:
    import os

    s.cfg.unlink()
    os.mkfifo(s.cfg)
    return Case(s.merge_args(), 1, [str(s.cfg), "does not exist"])


# the seed key needs real models: the random_seed cases above fail on it before opening any
for name in (
    "random_seed_a_string",
    "random_seed_negative",
    "random_seed_float",
    "random_seed_bool",
):
    setup = cases.cases["yaml_" + name]

    def with_models(s: Scene, setup: Callable[[Scene], Case] = setup) -> Case:
        case = setup(s)
        text = s.cfg.read_text().replace("merge_method: dare_ties\n", "")
        s.write_config(s.a, s.b, method="dare_ties", extra=f"base_model: {s.a}\n" + text)
        return case

    cases.cases["yaml_" + name] = with_models


# --- evaluation data and probe files -------------------------------------------------------


def _eval_case(name: str, text: str | bytes, *says: str, probe: str | None = None) -> None:
    def setup(s: Scene) -> Case:
        f = s.root / "set.jsonl"
        f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        flag = ["--probe", probe, str(f)] if probe else ["--eval", str(f)]
        return Case([*s.merge_args(), *flag], 1, [str(f), *says])

    setup.__name__ = "eval_" + name
    cases(setup)


for name, text, says in [
    (
        "deeply_nested_line",
        '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
        [":1:", "nested too deeply"],
    ),
    (
        "nested_line_second",
        '{"text": "ok"}\n{"text": ' + "[" * 50_000 + "]" * 50_000 + "}\n",
        [":2:"],
    ),
    ("lone_surrogate_in_text", '{"text": "a\\ud800b"}\n', [":1:", "`text`", "surrogate"]),
    ("lone_low_surrogate", '{"text": "ok"}\n{"text": "\\udc00"}\n', [":2:", "surrogate"]),
    (
        "lone_surrogate_in_messages",
        '{"messages": [{"role": "user", "content": "\\ud83d"}]}\n',
        ["messages[0].content", "surrogate"],
    ),
    ("lone_surrogate_in_key", '{"text": "ok", "\\ud800": 1}\n', ["surrogate"]),
    ("not_utf8", b'{"text": "caf\xe9"}\n', ["not UTF-8"]),
    ("not_json", '{"text": "ok"\n', [":1:", "not valid JSON"]),
    ("line_is_a_list", '["text"]\n', [":1:", "JSON object"]),
    ("line_is_a_number", "42\n", [":1:", "JSON object"]),
    ("text_not_a_string", '{"text": 42}\n', [":1:", "`text`"]),
    ("text_empty", '{"text": "   "}\n', [":1:", "`text`"]),
    ("text_and_messages", '{"text": "a", "messages": []}\n', [":1:", "exactly one"]),
    ("neither_text_nor_messages", '{"prompt": "a"}\n', [":1:", "exactly one"]),
    ("messages_not_a_list", '{"messages": "hi"}\n', [":1:", "messages"]),
    ("message_without_role", '{"messages": [{"content": "hi"}]}\n', [":1:", "messages[0]"]),
    ("no_records", "\n\n  \n", ["no records"]),
    ("nan_in_line", '{"text": NaN}\n', [":1:", "`text`"]),
]:
    _eval_case(name, text, *says)

for name, text, kind, says in [
    ("probe_unknown_key", '{"prompt": "a", "must_contian": ["x"]}\n', "contains", ["must_contian"]),
    (
        "probe_phrases_not_strings",
        '{"prompt": "a", "must_contain": [1]}\n',
        "contains",
        ["must_contain"],
    ),
    (
        "probe_case_flag_not_bool",
        '{"prompt": "a", "must_contain": ["x"], "case_sensitive": "yes"}\n',
        "contains",
        ["case_sensitive"],
    ),
    ("probe_expected_missing", '{"prompt": "a"}\n', "tool-calls", ["expected"]),
    (
        "probe_lone_surrogate",
        '{"prompt": "\\ud800", "must_contain": ["x"]}\n',
        "contains",
        ["`prompt`", "surrogate"],
    ),
    (
        "probe_deep",
        '{"prompt": "a", "expected": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
        "tool-calls",
        ["nested too deeply"],
    ),
]:
    _eval_case(name, text, *says, probe=kind)


@cases
def eval_file_is_a_fifo(s: Scene) -> Case:
    import os

    os.mkfifo(s.root / "set.jsonl")
    return Case([*s.merge_args(), "--eval", str(s.root / "set.jsonl")], 1, ["set.jsonl"])


@cases
def eval_file_is_a_directory(s: Scene) -> Case:
    (s.root / "set.jsonl").mkdir()
    return Case([*s.merge_args(), "--eval", str(s.root / "set.jsonl")], 1, ["set.jsonl"])


# --- report.json ---------------------------------------------------------------------------


def _report_case(name: str, edit: Callable[[dict], object] | bytes, *says: str) -> None:
    def setup(s: Scene) -> Case:
        s.alloy_output()
        path = s.out / "report.json"
        if isinstance(edit, bytes):
            path.write_bytes(edit)
        else:
            rep = json.loads(path.read_text())
            edit(rep)
            path.write_text(json.dumps(rep))
        return Case(["report", str(s.out)], 1, [str(path), *says])

    setup.__name__ = "report_" + name
    cases(setup)


_report_case("not_json", b"{truncated", "not valid JSON")
_report_case("not_utf8", b'{"format": "\xff"}', "UTF-8")
_report_case("deeply_nested", b"[" * 100_000 + b"]" * 100_000, "corrupt")
_report_case("a_list", b"[1, 2]", "JSON object")
_report_case("wrong_format", lambda r: r.update(format="other"), "not an Alloy merge report")
_report_case("merge_missing", lambda r: r.pop("merge"), "`merge`")
_report_case("models_not_a_list", lambda r: r["merge"].update(models={"a": 1}), "`merge.models`")
_report_case(
    "model_without_path", lambda r: r["merge"]["models"][0].pop("path"), "`merge.models[0].path`"
)
_report_case("run_missing", lambda r: r.pop("run"), "`run`")
_report_case("name_a_number", lambda r: r.update(name=7), "`name`")
_report_case(
    "seconds_a_string", lambda r: r["run"].update(merge_seconds="fast"), "`run.merge_seconds`"
)
_report_case("rationale_a_list", lambda r: r.update(rationale=[]), "`rationale`")
_report_case("inventory_of_strings", lambda r: r.update(inventory=["x"]), "`inventory[0]`")
_report_case("evaluation_a_string", lambda r: r.update(evaluation="good"), "`evaluation`")


@pytest.mark.parametrize("setup", cases.params())
def test_input_case(tmp_path: Path, setup: object) -> None:
    run_case(Scene(tmp_path), setup)  # type: ignore[arg-type]


# --- what must be accepted -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sep", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"], ids=repr
)
def test_unicode_line_separators_inside_strings_are_text(tmp_path: Path, sep: str) -> None:
    """JSONL lines end at newlines only: a U+2028 (or another separator str.splitlines knows)
    inside a JSON string is part of the text, in data sets and in probes."""
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"text": f"one{sep}two"}, ensure_ascii=False) + "\n", "utf-8")
    assert [d.text for d in load_data_set("s", data).documents] == [f"one{sep}two"]
    probes = tmp_path / "p.jsonl"
    line = {"prompt": f"a{sep}b", "must_contain": [f"c{sep}d"]}
    probes.write_text(json.dumps(line, ensure_ascii=False) + "\r\n", "utf-8")
    (p,) = load_probe_set("contains", "p", probes).probes
    assert p.prompt == f"a{sep}b" and p.must_contain == (f"c{sep}d",)


def test_seed_is_recorded_and_read_back(tmp_path: Path) -> None:
    """alloy_config.yml records the seed as a key: merging it again gives the same bytes."""
    s = Scene(tmp_path)
    extra = f"base_model: {s.a}\nparameters:\n  density: 0.5\n"
    s.write_config(s.a, s.b, method="dare_ties", extra=extra)
    first = run_cli(s.merge_args(tmp_path / "one", "--random-seed", "7"))
    assert first.exit_code == 0, first.output
    recorded = tmp_path / "one" / "alloy_config.yml"
    assert "random_seed: 7" in recorded.read_text()
    before = snapshot(tmp_path / "in")
    again = run_cli(["merge", str(recorded), str(tmp_path / "two")])
    assert again.exit_code == 0, again.output
    w1 = (tmp_path / "one" / "model.safetensors").read_bytes()
    assert (tmp_path / "two" / "model.safetensors").read_bytes() == w1
    other = run_cli(s.merge_args(tmp_path / "three", "--random-seed", "8"))
    assert other.exit_code == 0, other.output
    assert (tmp_path / "three" / "model.safetensors").read_bytes() != w1
    assert snapshot(tmp_path / "in") == before
