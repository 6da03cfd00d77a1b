"""`chat_template:`: the built-in names render as mergekit 0.1.5's templates of the same names,
a literal template is used as written, `auto` takes the most common template of the inputs,
and anything else is an error naming the key."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from vocab_models import VocabModels

import alloy
from alloy.config.chat_templates import BUILTIN, template_text
from alloy.config.load import parse_config
from alloy.errors import ConfigError

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "user", "content": " Hi there \n"}, {"role": "assistant", "content": "Hello! "}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Again"},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
    [
        {"role": "system", "content": "One."},
        {"role": "user_context", "content": "ctx"},
        {"role": "system", "content": " Two. "},
    ],
]


def _mergekit_template(name: str) -> str:
    return (resources.files("mergekit._data.chat_templates") / f"{name}.jinja").read_text()


def _render(tok: Any, template: str, messages: list[dict[str, str]], gen: bool) -> str:
    try:
        out: str = tok.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=gen
        )
        return out
    except Exception as e:  # both templates must refuse the same conversations
        return f"error: {type(e).__name__}"


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_names_render_as_mergekits(vocab_models: VocabModels, name: str) -> None:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(vocab_models.base))
    theirs = _mergekit_template(name)
    for messages in CONVERSATIONS:
        for gen in (False, True):
            ours = _render(tok, BUILTIN[name], messages, gen)
            assert ours == _render(tok, theirs, messages, gen), (name, messages, gen)


def test_literal_auto_and_errors() -> None:
    literal = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert template_text(literal) == literal
    assert template_text("auto") is None
    base = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
    for bad in ("chatmlx", "{short}"):
        with pytest.raises(ConfigError) as e:
            parse_config(None, source="c.yml", text=base + f"chat_template: '{bad}'\n")
        assert e.value.issues[0].path == "chat_template" and e.value.issues[0].line == 5


def _with_template(path: Path, template: str) -> None:
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))


def test_auto_takes_the_most_common_input_template_into_a_union(
    vocab_models: VocabModels, tmp_path: Path
) -> None:
    import shutil

    import transformers

    m = vocab_models
    dirs = {}
    for name, template in (
        ("base", BUILTIN["chatml"]),
        ("ft_added", BUILTIN["llama3"]),
        ("ft_reordered", BUILTIN["llama3"]),
    ):
        d = tmp_path / name
        shutil.copytree(getattr(m, name), d)
        _with_template(d, template)
        dirs[name] = str(d)
    config = {
        "merge_method": "linear",
        "base_model": dirs["base"],
        "models": [{"model": d, "parameters": {"weight": 1.0}} for d in dirs.values()],
        "tokenizer_source": "union",
        "chat_template": "auto",
    }
    out = alloy.merge(config, tmp_path / "out").out_dir
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template == BUILTIN["llama3"]
    assert len(tok) == 125  # the union's tokens, with the chosen template
