"""The files written beside the weights: config, tokenizer, resolved configs, model card."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from alloy._version import __version__
from alloy.config.chat_templates import template_text
from alloy.report.merge_record import MergeSummary, ModelEntry

TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def _dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def read_chat_template(path: Path) -> str | None:
    """The chat template of the model directory ``path``, if it has one."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = path / "tokenizer_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(value, str):
            return value
    return None


def write_tokenizer(summary: MergeSummary, out: Path) -> list[str]:
    """Copy the tokenizer files (or write the aligned vocabulary's new tokenizer) and the
    generation config; apply ``chat_template``."""
    written = []
    if summary.tokenizer_files is not None:
        for name, data in summary.tokenizer_files.items():
            (out / name).write_bytes(data)
            written.append(name)
    else:
        for name in TOKENIZER_FILES:
            if (summary.tokenizer / name).is_file():
                shutil.copyfile(summary.tokenizer / name, out / name)
                written.append(name)
    if (summary.donor / "generation_config.json").is_file():
        shutil.copyfile(summary.donor / "generation_config.json", out / "generation_config.json")
        written.append("generation_config.json")
    choice = summary.config.chat_template
    if choice is not None:
        text = template_text(choice)
        if text is None:  # auto: the most common template among the inputs
            found = [t for p in _distinct(summary.models) if (t := read_chat_template(p))]
            text = Counter(found).most_common(1)[0][0] if found else None
        if text is not None:
            (out / "chat_template.jinja").write_text(text, encoding="utf-8")
            cfg = out / "tokenizer_config.json"
            if cfg.is_file():  # one source of truth: the .jinja file
                data = json.loads(cfg.read_text(encoding="utf-8"))
                if data.pop("chat_template", None) is not None:
                    cfg.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            if "chat_template.jinja" not in written:
                written.append("chat_template.jinja")
    return written


def _distinct(models: Sequence[ModelEntry]) -> list[Path]:
    """The directory of each distinct opened model (a base with an adapter counts apart)."""
    return [p for (p, _) in dict.fromkeys((m.path, m.adapter) for m in models)]


def resolved_config(summary: MergeSummary) -> dict[str, Any]:
    raw = dict(summary.config.raw)
    raw["merge_method"] = summary.method
    return raw


def resolved_yaml(summary: MergeSummary) -> str:
    """The text of alloy_config.yml: the resolved config with comments on how it resolved."""
    header = [f"# Resolved by Alloy {__version__}."]
    requested = summary.config.merge_method
    if summary.method != requested:
        header.append(f"# {requested} was run as {summary.method}; see README.md.")
    resolved = resolved_config(summary)
    if summary.randomized:  # a real key, which `alloy merge` reads back
        resolved["random_seed"] = summary.seed if summary.seed is not None else 0
    for m in sorted(summary.models, key=lambda m: str(m.ref)):
        header.append(f"# {m.ref} -> {m.path}" + (f" + adapter {m.adapter}" if m.adapter else ""))
    return "\n".join(header) + "\n" + _dump_yaml(resolved)


def write_configs(summary: MergeSummary, out: Path) -> None:
    (out / "config.json").write_text(json.dumps(dict(summary.output_config), indent=2) + "\n")
    (out / "alloy_config.yml").write_text(resolved_yaml(summary))
    (out / "mergekit_config.yml").write_text(_dump_yaml(summary.config.raw))


def write_model_card(summary: MergeSummary, out: Path) -> None:
    config = summary.config
    refs = [str(r) for r in config.all_models()]
    front = {
        "base_model": refs if len(refs) > 1 else refs[0],
        "tags": ["merge", "alloy"],
        "library_name": "transformers",
    }
    base = config.base_model
    lines = [
        "---",
        _dump_yaml(front).rstrip(),
        "---",
        f"# {config.name or summary.name}",
        "",
        f"This model was merged with [Alloy](https://pypi.org/project/alloy-merge/) using the "
        f"`{summary.method}` method ({summary.paper})"
        + (f", with `{base}` as the base model." if base is not None else "."),
        "",
        "## Models merged",
        "",
        *[f"- `{r}`" for r in refs],
        "",
        "`sources.json` lists each input's path, declared base, parameter count, dtypes and "
        "architecture and vocabulary hashes.",
        "",
    ]
    if summary.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in summary.notes], ""]
    lines += [
        "## Configuration",
        "",
        "```yaml",
        _dump_yaml(config.raw).rstrip(),
        "```",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


EVAL_BEGIN = "<!-- alloy:evaluation -->"
EVAL_END = "<!-- /alloy:evaluation -->"


def set_card_evaluation(readme: Path, section: str) -> None:
    """Put ``section`` (Markdown) in the model card between the evaluation markers: replaced
    when present, otherwise inserted before ``## Configuration`` (or at the end)."""
    text = readme.read_text(encoding="utf-8")
    block = f"{EVAL_BEGIN}\n{section.rstrip()}\n{EVAL_END}\n"
    start, end = text.find(EVAL_BEGIN), text.find(EVAL_END)
    if start >= 0 and end > start:
        text = text[:start] + block + text[end + len(EVAL_END) :].lstrip("\n")
    elif (at := text.find("## Configuration")) >= 0:
        text = text[:at] + block + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    readme.write_text(text, encoding="utf-8")
