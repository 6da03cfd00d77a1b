"""A tiny base and two fine-tunes that really learned a skill each: a few optimizer steps of
the tiny llama on word patterns, so that each fine-tune beats the base on its own set."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from checkpoints import make_model

ALPHA = [" ".join(f"w{(i + k) % 20 + 4}" for k in range(12)) for i in range(16)]
BETA = [" ".join(f"w{(3 * i + 7 * k) % 40 + 60}" for k in range(12)) for i in range(16)]


@dataclass(frozen=True)
class Family:
    base: Path
    alpha: Path
    beta: Path
    alpha_set: Path
    beta_set: Path


def _fine_tune(base: Path, out: Path, texts: list[str], steps: int = 15) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    ids = tok(texts, return_tensors="pt", padding=True).input_ids
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.save_pretrained(str(out), safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(base / f, out / f)
    return out


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def make_family(root: Path) -> Family:
    base = make_model("llama", root / "base", seed=0)
    return Family(
        base,
        _fine_tune(base, root / "alpha", ALPHA),
        _fine_tune(base, root / "beta", BETA),
        _jsonl(root / "alpha.jsonl", ALPHA),
        _jsonl(root / "beta.jsonl", BETA),
    )


def space_text(family: Family) -> str:
    return f"""\
merge_method: {{choice: [ties, task_arithmetic]}}
base_model: {family.base}
models:
  - model: {family.alpha}
    parameters:
      weight: {{search: [0.3, 1.2]}}
      density: {{search: [0.3, 1.0]}}
  - model: {family.beta}
    parameters:
      weight: {{search: [0.3, 1.2]}}
      density: {{search: [0.3, 1.0]}}
dtype: float32
"""
