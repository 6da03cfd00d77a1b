"""The files written beside the weights: config, tokenizer, resolved configs, model card."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from alloy._version import __version__
from alloy.config.schema import ModelRef
from alloy.plan.models import InputModel
from alloy.plan.planner import MergePlan
from alloy.report.chat_templates import template_text

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


def tokenizer_donor(plan: MergePlan) -> InputModel:
    src = plan.config.tokenizer_source
    if isinstance(src, ModelRef):
        return plan.models[src]
    return plan.donor


def read_chat_template(model: InputModel) -> str | None:
    jinja = model.path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = model.path / "tokenizer_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(value, str):
            return value
    return None


def write_tokenizer(plan: MergePlan, out: Path) -> list[str]:
    """Copy the tokenizer files and generation config; apply ``chat_template``."""
    written = []
    donor = tokenizer_donor(plan)
    for name in TOKENIZER_FILES:
        if (donor.path / name).is_file():
            shutil.copyfile(donor.path / name, out / name)
            written.append(name)
    if (plan.donor.path / "generation_config.json").is_file():
        shutil.copyfile(plan.donor.path / "generation_config.json", out / "generation_config.json")
        written.append("generation_config.json")
    choice = plan.config.chat_template
    if choice is not None:
        text = template_text(choice)
        if text is None:  # auto: the most common template among the inputs
            found = [t for m in _distinct(plan.models) if (t := read_chat_template(m))]
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


def _distinct(models: dict[ModelRef, InputModel]) -> list[InputModel]:
    return list({id(m): m for m in models.values()}.values())


def resolved_config(plan: MergePlan) -> dict[str, Any]:
    raw = dict(plan.config.raw)
    raw["merge_method"] = plan.method.name
    return raw


def resolved_yaml(plan: MergePlan, seed: int | None) -> str:
    """The text of alloy_config.yml: the resolved config with comments on how it resolved."""
    header = [f"# Resolved by Alloy {__version__}."]
    if plan.method.name != plan.config.merge_method:
        header.append(f"# {plan.config.merge_method} was run as {plan.method.name}; see README.md.")
    resolved = resolved_config(plan)
    if plan.method.randomized:  # a real key, which `alloy merge` reads back
        resolved["random_seed"] = seed if seed is not None else 0
    for ref, m in sorted(plan.models.items(), key=lambda kv: str(kv[0])):
        header.append(f"# {ref} -> {m.path}" + (f" + adapter {m.adapter}" if m.adapter else ""))
    return "\n".join(header) + "\n" + _dump_yaml(resolved)


def write_configs(plan: MergePlan, out: Path, seed: int | None) -> None:
    (out / "config.json").write_text(json.dumps(plan.output_config, indent=2) + "\n")
    (out / "alloy_config.yml").write_text(resolved_yaml(plan, seed))
    (out / "mergekit_config.yml").write_text(_dump_yaml(plan.config.raw))


def write_model_card(plan: MergePlan, out: Path, name: str) -> None:
    refs = [str(r) for r in plan.config.all_models()]
    front = {
        "base_model": refs if len(refs) > 1 else refs[0],
        "tags": ["merge", "alloy"],
        "library_name": "transformers",
    }
    spec = plan.method
    base = plan.config.base_model
    lines = [
        "---",
        _dump_yaml(front).rstrip(),
        "---",
        f"# {plan.config.name or name}",
        "",
        f"This model was merged with [Alloy](https://pypi.org/project/alloy-merge/) using the "
        f"`{spec.name}` method ({spec.paper})"
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
    if plan.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in plan.notes], ""]
    lines += [
        "## Configuration",
        "",
        "```yaml",
        _dump_yaml(plan.config.raw).rstrip(),
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
