"""LoRA adapters of the real base, trained on the CPU on chat conversations.

Each conversation is rendered with the model's own chat template; the loss is on the
assistant's answer only (its tokens and the end-of-turn token), as chat fine-tunes are trained;
replayed general text is plain text with the language-model loss on every token.
Batches are drawn under a fixed seed and padded on the right; dropout is off. An adapter is
cached under a key of the base, the settings, the seed and the training data, so that a second
run with the same inputs re-uses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alloy.demo.real.data import Messages
from alloy.demo.train import torch_threads

IGNORE = -100
CACHE_VERSION = "1"


@dataclass(frozen=True)
class LoraSettings:
    """One adapter's training run."""

    steps: int
    lr: float
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip
    batch: int = 8
    threads: int = 2


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    labels: list[int]  # IGNORE on the prompt


def encode_chat(tokenizer: Any, messages: Messages) -> Encoded:
    """Token ids of the whole conversation, with labels on the last (assistant) turn only."""
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the last turn after the prompt")
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
    return Encoded(ids, [IGNORE] * n + ids[n:])


def encode_text(tokenizer: Any, text: str) -> Encoded:
    """Token ids of plain text, every token a label (the language-model loss of replayed
    general text) but the first, which has no context."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return Encoded(ids, [IGNORE, *ids[1:]])


def batch_tensors(examples: list[Encoded], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` of a batch."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        ids[r, : len(e.ids)] = torch.tensor(e.ids)
        labels[r, : len(e.ids)] = torch.tensor(e.labels)
        mask[r, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass(frozen=True)
class TrainLog:
    steps: int
    first_loss: float
    last_loss: float  # mean of the last 10 steps
    seconds: float
    trainable: int
    cached: bool = False


def _rate(steps: int) -> Any:
    warm = max(1, steps // 10)

    def rate(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return rate


def answer_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean next-token loss over the labelled positions (the transformers loss), with the
    output layer applied at those positions only: most of a chat example is its prompt, whose
    logits (vocabulary 49152 wide) would be computed, and back-propagated, for nothing. Models
    that reshape their logits (soft-capping, scaling) take transformers' own loss."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    plain = not any(
        getattr(config, k, None) not in (None, 1.0)
        for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    )
    decoder = base.get_decoder() if plain and hasattr(base, "get_decoder") else None
    if decoder is None:
        return model(**batch).loss  # type: ignore[no-any-return]
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def optimise(
    model: Any, examples: list[Encoded], s: LoraSettings, pad: int, seed: int, progress: Any
) -> TrainLog:
    """AdamW on the trainable parameters: linear warm-up over 10% of the steps, cosine decay."""
    started = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _rate(s.steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    for _ in range(s.steps):
        idx = torch.randint(len(examples), (s.batch,), generator=gen).tolist()
        loss = answer_loss(model, batch_tensors([examples[i] for i in idx], pad))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.detach().item())
        if progress is not None:
            progress.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            progress.update(1)
    model.eval()
    tail = losses[-10:]
    trained = sum(p.numel() for p in params)
    return TrainLog(
        s.steps, losses[0], sum(tail) / len(tail), time.perf_counter() - started, trained
    )


def train_adapter(
    base: Path,
    conversations: list[Messages],
    s: LoraSettings,
    out: Path,
    seed: int,
    progress: Any = None,
    texts: list[str] | None = None,
) -> TrainLog:
    """A PEFT LoRA adapter of ``base`` trained on ``conversations`` and the plain ``texts``
    (general text replayed with the language-model loss), drawn together; saved to ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    examples = [encode_chat(tokenizer, m) for m in conversations]
    examples += [encode_text(tokenizer, t) for t in texts or []]
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(
        r=s.rank,
        lora_alpha=s.alpha,
        lora_dropout=0.0,
        target_modules=list(s.targets),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), torch_threads(s.threads):
        torch.manual_seed(seed)  # PEFT initialises A from the global generator
        peft_model = get_peft_model(model, config)
        log = optimise(peft_model, examples, s, tokenizer.pad_token_id, seed + 1, progress)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return log


def adapter_key(base_key: str, data_key: str, s: LoraSettings, seed: int) -> str:
    ident = json.dumps([CACHE_VERSION, base_key, data_key, asdict(s), seed], sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def cached_adapter(
    cache: Path,
    name: str,
    key: str,
    train: Any,
) -> tuple[Path, TrainLog]:
    """The adapter ``cache/name-key``: trained by ``train(tmp_dir) -> TrainLog`` when missing
    (written to a temporary directory first, so an interrupted run leaves no half adapter)."""
    final = cache / f"{name}-{key}"
    log_file = final / "alloy-train.json"
    if log_file.is_file():
        return final, TrainLog(**{**json.loads(log_file.read_text()), "cached": True})
    tmp = cache / f".{name}-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log: TrainLog = train(tmp)
    (tmp / "alloy-train.json").write_text(json.dumps(asdict(log), indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final, log
