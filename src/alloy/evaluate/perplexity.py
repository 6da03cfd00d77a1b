"""Perplexity: the mean token-level negative log-likelihood of a data set, exponentiated.

    NLL = - (1/N) * sum_t log p(x_t | x_<t),   perplexity = exp(NLL)

over the N scored tokens of all documents (the first token of a document has no prediction).
A document longer than the context is scored with sliding windows, each token exactly once:
the first window scores tokens 1..L-1 of its L = ``max_length`` tokens; every further window
ends ``stride`` tokens later, scores only those new tokens and sees up to L tokens in total,
so each of them has at least L - stride tokens of context (the strided evaluation of the
Hugging Face perplexity guide, without its dropped token at window starts). Windows are
batched with right padding (causal attention keeps padding invisible), in a fixed order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from alloy.errors import EvaluationError
from alloy.evaluate.data import DataSet, Document
from alloy.evaluate.models import EvalOptions, LoadedModel, pad_id, render_chat


@dataclass(frozen=True)
class Encoded:
    """A tokenized document; ``scored[t]`` says whether token t's prediction counts."""

    ids: list[int]
    scored: list[bool]


@dataclass(frozen=True)
class Window:
    doc: int  # index of the document
    start: int  # the model sees ids[start:end]
    end: int
    first: int  # scores targets ids[first:end]


@dataclass(frozen=True)
class PerplexityResult:
    nll_sum: float
    tokens: int

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if self.tokens else math.nan


def windows(length: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, end, first)`` windows scoring tokens 1..length-1 of a document once each."""
    if not 1 <= stride < max_length:
        raise EvaluationError(
            f"the stride ({stride}) must be at least 1 and less than the window length "
            f"({max_length}), so that every scored token has context."
        )
    if length < 2:
        return []
    end = min(length, max_length)
    out = [(0, end, 1)]
    while end < length:
        first, end = end, min(end + stride, length)
        out.append((max(0, end - max_length), end, first))
    return out


def _assistant_spans(
    tokenizer: Any, messages: list[dict[str, str]], full: str, where: str
) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in ``full``: from the end of the generation
    prompt before each assistant message to the end of that message's rendering."""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i == 0:
            raise EvaluationError(
                f"{where}: the conversation opens with an assistant turn; --assistant-only "
                "needs the prompt before each assistant turn."
            )
        before = render_chat(tokenizer, messages[:i], generation_prompt=True, where=where)
        upto = render_chat(tokenizer, messages[: i + 1], generation_prompt=False, where=where)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise EvaluationError(
                f"{where}: the chat template does not render the conversation turn by turn "
                "(a prefix of the conversation renders differently), so the assistant turns "
                "cannot be located; evaluate without --assistant-only."
            )
        spans.append((len(before), len(upto)))
    return spans


def encode(tokenizer: Any, doc: Document, assistant_only: bool, where: str) -> Encoded:
    if doc.messages is None:
        assert doc.text is not None
        ids = list(tokenizer(doc.text, verbose=False)["input_ids"])
        return Encoded(ids, [False] + [True] * (len(ids) - 1))
    full = render_chat(tokenizer, doc.messages, generation_prompt=False, where=where)
    if not assistant_only:
        ids = list(tokenizer(full, add_special_tokens=False, verbose=False)["input_ids"])
        return Encoded(ids, [False] + [True] * (len(ids) - 1))
    if not getattr(tokenizer, "is_fast", False):
        raise EvaluationError(
            f"{where}: --assistant-only needs a fast tokenizer (tokenizer.json) to map "
            "characters to tokens."
        )
    spans = _assistant_spans(tokenizer, doc.messages, full, where)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = list(enc["input_ids"])
    scored = [
        t > 0 and any(s <= start < e for s, e in spans)
        for t, (start, _) in enumerate(enc["offset_mapping"])
    ]
    return Encoded(ids, scored)


def window_length(lm: LoadedModel, options: EvalOptions) -> tuple[int, int]:
    max_length = min(options.max_length or lm.context, lm.context)
    stride = options.stride or max(1, max_length // 2)
    if stride >= max_length:
        raise EvaluationError(
            f"--stride {stride} must be less than the window length {max_length} (the "
            "model's context, or --max-length)."
        )
    return max_length, stride


def _token_nll(logits: torch.Tensor, target: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """-log softmax(logits)[target] per position, in float32, ``rows`` positions at a time
    (a float32 copy of all of a window's logits can take gigabytes for large vocabularies)."""
    out = []
    for i in range(0, logits.shape[0], rows):
        chunk = logits[i : i + rows].float()
        picked = chunk.gather(1, target[i : i + rows, None])[:, 0]
        out.append(torch.logsumexp(chunk, dim=-1) - picked)
    return torch.cat(out) if out else logits.new_zeros(0, dtype=torch.float32)


@torch.inference_mode()
def score(
    model: Any,
    docs: list[Encoded],
    *,
    max_length: int,
    stride: int,
    batch_size: int,
    pad: int = 0,
    progress: Any = None,
) -> PerplexityResult:
    """Sum the NLL of every scored token of ``docs`` (float64 accumulation)."""
    todo = [
        Window(d, s, e, f)
        for d, doc in enumerate(docs)
        for s, e, f in windows(len(doc.ids), max_length, stride)
        if any(doc.scored[f:e])
    ]
    todo.sort(key=lambda w: -(w.end - w.start))  # similar lengths batch together
    if progress is not None:
        progress.reset(total=len(todo))
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for b in range(0, len(todo), batch_size):
        batch = todo[b : b + batch_size]
        width = max(w.end - w.start for w in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, w in enumerate(batch):
            ids[r, : w.end - w.start] = torch.tensor(docs[w.doc].ids[w.start : w.end])
            mask[r, : w.end - w.start] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for r, w in enumerate(batch):
            # logits at position p predict token p + 1
            lo, hi = w.first - w.start - 1, w.end - w.start - 1
            target = torch.tensor(docs[w.doc].ids[w.first : w.end], device=logits.device)
            keep = torch.tensor(docs[w.doc].scored[w.first : w.end], device=logits.device)
            token_nll = _token_nll(logits[r, lo:hi], target)
            nll += float(token_nll[keep].double().sum())
            count += int(keep.sum())
        del logits
        if progress is not None:
            progress.update(len(batch))
    return PerplexityResult(nll, count)


def perplexity(
    lm: LoadedModel, data: DataSet, options: EvalOptions, progress: Any = None
) -> PerplexityResult:
    """Perplexity of ``lm`` on ``data``."""
    max_length, stride = window_length(lm, options)
    docs = [
        encode(lm.tokenizer, doc, options.assistant_only, f"{data.path} (document {i + 1})")
        for i, doc in enumerate(data.documents)
    ]
    result = score(
        lm.model,
        docs,
        max_length=max_length,
        stride=stride,
        batch_size=options.batch_size,
        pad=pad_id(lm.tokenizer),
        progress=progress,
    )
    if result.tokens == 0:
        raise EvaluationError(
            f"{data.path}: no token to score for {lm.label} (documents of one token, or no "
            "assistant turn with --assistant-only)."
        )
    return result
