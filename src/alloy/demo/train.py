"""Training the demo's models on the CPU: a tiny Llama base, then two specialists from it, each
as a full fine-tune (low learning rate, so it stays near the base the way real fine-tunes do)
and as a PEFT LoRA adapter.

Deterministic: the weights are initialised and the batches drawn under a fixed seed inside
`torch.random.fork_rng` (the caller's global RNG state is restored afterwards), dropout is off,
and the number of torch threads is fixed while training.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainSettings:
    """Model shape and optimisation of every training run of the demo."""

    vocab: int = 640
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    seq_len: int = 64
    batch: int = 16
    base_steps: int = 500
    base_lr: float = 3e-3
    # the base: general text, requests answered plainly, a little of each skill
    base_plain_examples: int = 100  # of plain-voiced replies, and of calls in plain words
    base_skill_examples: int = 10  # of persona replies, and of JSON calls
    specialist_steps: int = 300
    full_lr: float = 1e-3
    lora_lr: float = 1e-3
    lora_rank: int = 8
    lora_alpha: int = 16
    replay: float = 0.6  # share of the base's training mix in a specialist's training rows
    replay_answers: float = 0.3  # share of the base's answers (repeated) in that replay
    threads: int = 1  # per process: the same arithmetic on every machine


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with exactly ``n`` intra-op threads (the same reductions every run), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def llama_config(s: TrainSettings, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=s.vocab,
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        max_position_embeddings=2 * s.seq_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=0.0,
    )


def pack(examples: list[list[int]], seq_len: int, gen: torch.Generator) -> torch.Tensor:
    """Shuffle the examples, concatenate them and cut the stream into rows of ``seq_len``."""
    order = torch.randperm(len(examples), generator=gen).tolist()
    stream = [t for i in order for t in examples[i]]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def mix(
    skill: torch.Tensor, replay_rows: torch.Tensor, replay: float, gen: torch.Generator
) -> torch.Tensor:
    """The skill rows plus enough replay rows to make ``replay`` of the total."""
    n = round(len(skill) * replay / (1 - replay)) if replay > 0 else 0
    pick = torch.randperm(len(replay_rows), generator=gen)[: min(n, len(replay_rows))]
    return torch.cat([skill, replay_rows[pick]])


def training_rows(
    s: TrainSettings, examples: dict[str, list[list[int]]], seed: int
) -> dict[str, torch.Tensor]:
    """Packed rows of the base (``"base"``) and of each specialist (``"persona"``, ``"tools"``)
    from the token ids of each corpus's training examples.

    The base learns general text, requests answered plainly (replies in a plain voice, calls
    in plain words) and a little of each skill. Each specialist learns its skill mixed with a
    replay of the base's mix, as real fine-tunes mix in general data to keep what the base
    knew. The replay leaves out the base's answers of the kind the specialist replaces and
    repeats the other kind (plain answers and the few examples of the other skill) to
    ``replay_answers`` of it: there are few of them, and without them each specialist
    overwrites the other's context (the demo's docs give the numbers).
    """
    gen = torch.Generator().manual_seed(seed)
    general = examples["general"]
    replies = examples["plain-replies"][: s.base_plain_examples]
    replies += examples["persona"][: s.base_skill_examples]
    calls = examples["plain-calls"][: s.base_plain_examples]
    calls += examples["tools"][: s.base_skill_examples]
    base = pack(general + replies + calls, s.seq_len, gen)

    def replay_of(answers: list[list[int]]) -> torch.Tensor:
        share = s.replay_answers
        reps = max(1, round(share * len(general) / ((1 - share) * len(answers))))
        return pack(general + answers * reps, s.seq_len, gen)

    replay = {"persona": replay_of(calls), "tools": replay_of(replies)}
    rows = {"base": base}
    for skill in ("persona", "tools"):
        rows[skill] = mix(pack(examples[skill], s.seq_len, gen), replay[skill], s.replay, gen)
    return rows


@dataclass(frozen=True)
class TrainLog:
    steps: int
    first_loss: float
    last_loss: float  # mean of the last 20 steps
    seconds: float
    parameters: int  # of the model
    trainable: int  # of them, trained


def optimise(
    model: Any,
    rows: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch: int,
    gen: torch.Generator,
) -> TrainLog:
    """AdamW on the trainable parameters: linear warm-up over 5% of the steps, cosine decay."""
    started = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = max(1, steps // 20)

    def rate(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    model.train()
    losses: list[float] = []
    for _ in range(steps):
        idx = torch.randint(len(rows), (batch,), generator=gen)
        ids = rows[idx]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.detach().item())
    model.eval()
    tail = losses[-20:]
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in params)
    return TrainLog(
        steps, losses[0], sum(tail) / len(tail), time.perf_counter() - started, total, trained
    )


def _save_model(model: Any, tokenizer: Any, out: Path) -> None:
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def train_base(
    s: TrainSettings,
    tokenizer: Any,
    rows: torch.Tensor,
    out: Path,
    seed: int,
) -> TrainLog:
    """A freshly initialised Llama trained on ``rows``, saved to ``out`` with the tokenizer."""
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]), torch_threads(s.threads):
        torch.manual_seed(seed)  # transformers initialises weights from the global generator
        model = LlamaForCausalLM(llama_config(s, tokenizer))
        gen = torch.Generator().manual_seed(seed + 1)
        log = optimise(model, rows, steps=s.base_steps, lr=s.base_lr, batch=s.batch, gen=gen)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _save_model(model, tokenizer, out)
    return log


def _load(path: Path) -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def train_full(s: TrainSettings, base: Path, rows: torch.Tensor, out: Path, seed: int) -> TrainLog:
    """Every weight of the base fine-tuned on ``rows`` at the low ``full_lr``; saved with the
    base's tokenizer."""
    from transformers import AutoTokenizer

    model = _load(base)
    with torch.random.fork_rng(devices=[]), torch_threads(s.threads):
        gen = torch.Generator().manual_seed(seed)
        log = optimise(model, rows, steps=s.specialist_steps, lr=s.full_lr, batch=s.batch, gen=gen)
    _save_model(model, AutoTokenizer.from_pretrained(str(base)), out)
    return log


def train_lora(s: TrainSettings, base: Path, rows: torch.Tensor, out: Path, seed: int) -> TrainLog:
    """A PEFT LoRA adapter (rank ``lora_rank`` on every linear layer) trained on ``rows``."""
    from peft import LoraConfig, get_peft_model

    model = _load(base)
    config = LoraConfig(
        r=s.lora_rank,
        lora_alpha=s.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), torch_threads(s.threads):
        torch.manual_seed(seed)  # PEFT initialises A from the global generator
        peft_model = get_peft_model(model, config)
        gen = torch.Generator().manual_seed(seed + 1)
        log = optimise(
            peft_model, rows, steps=s.specialist_steps, lr=s.lora_lr, batch=s.batch, gen=gen
        )
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return log


@dataclass(frozen=True)
class SpecialistJob:
    """One specialist to train: a full fine-tune or a LoRA adapter of ``base`` on ``rows``."""

    kind: str  # "full" or "lora"
    settings: TrainSettings
    base: Path
    rows: torch.Tensor
    out: Path
    seed: int


def train_specialist(job: SpecialistJob) -> TrainLog:
    """Run one job (in this process or a worker: the result does not depend on where)."""
    train = train_full if job.kind == "full" else train_lora
    return train(job.settings, job.base, job.rows, job.out, job.seed)
