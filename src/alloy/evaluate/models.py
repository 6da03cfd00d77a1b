"""Loading a model and its tokenizer for evaluation, with transformers (imported lazily).

Only this package imports transformers; `alloy merge` without ``--eval`` never does.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from alloy.config.dtypes import DTYPES
from alloy.errors import EvaluationError
from alloy.io.gguf.view import find_gguf, gguf_view

DEFAULT_MAX_LENGTH = 2048
BIG_MODEL_BYTES = 64 * 1024 * 1024
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


@dataclass(frozen=True)
class EvalOptions:
    """How models are run. ``None`` lengths mean: derived from each model's config."""

    device: str = "cpu"
    dtype: str = "auto"  # auto: float32 on the CPU, the checkpoint's dtype elsewhere
    batch_size: int = 4
    max_length: int | None = None  # tokens per window; default min(model context, 2048)
    stride: int | None = None  # new tokens scored per further window; default max_length // 2
    assistant_only: bool = False  # chat data: loss on the assistant turns only
    max_new_tokens: int = 64  # probes: greedy generation length
    trust_remote_code: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise EvaluationError("the evaluation batch size must be at least 1.")
        if self.max_length is not None and self.max_length < 2:
            raise EvaluationError("--max-length must be at least 2 tokens.")
        if self.stride is not None and self.stride < 1:
            raise EvaluationError("--stride must be at least 1 token.")
        if self.max_new_tokens < 1:
            raise EvaluationError("--max-new-tokens must be at least 1.")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise EvaluationError(f"unknown dtype {self.dtype!r}: use auto, {', '.join(DTYPES)}.")


def transformers_module() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise EvaluationError(
            "evaluation needs transformers: pip install 'alloy-merge[eval]' "
            "(or pip install transformers)."
        ) from e
    silence_transformers()
    return transformers


def silence_transformers() -> None:
    """Transformers' advisory logging and progress bars off. Raises ImportError without it."""
    from transformers.utils import logging as hf_logging

    # both are untyped in transformers: typed here, once
    for off in (hf_logging.set_verbosity_error, hf_logging.disable_progress_bar):
        cast(Callable[[], None], off)()


@dataclass
class LoadedModel:
    label: str
    path: Path
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    context: int  # the longest sequence the model takes, capped at DEFAULT_MAX_LENGTH

    @property
    def device(self) -> torch.device:
        return torch.device(next(self.model.parameters()).device)


def _context(config: Any) -> int:
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            return min(value, DEFAULT_MAX_LENGTH)
    return DEFAULT_MAX_LENGTH


def _dtype_kwargs(transformers: Any, dtype: torch.dtype | str) -> dict[str, Any]:
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load(label: str, path: Path, options: EvalOptions) -> LoadedModel:
    """Load ``path`` as a causal LM in eval mode on ``options.device``, with its tokenizer."""
    transformers = transformers_module()
    gguf_file = find_gguf(path)  # a GGUF model: its view's config and tokenizer, its weights
    gguf_kwargs = {} if gguf_file is None else {"gguf_file": gguf_file.name}
    path = path if gguf_file is None else gguf_view(gguf_file)
    if not (path / "config.json").is_file():
        raise EvaluationError(f"{label}: {path} has no config.json; give a model directory.")
    if options.dtype != "auto":
        dtype: torch.dtype | str = DTYPES[options.dtype]
    else:
        dtype = torch.float32 if options.device == "cpu" else "auto"
    common = {"trust_remote_code": options.trust_remote_code, "local_files_only": True}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **common)
    except Exception as e:
        raise EvaluationError(
            f"{label}: cannot load the tokenizer of {path} ({type(e).__name__}: {e}); "
            "the directory needs tokenizer files (a merge copies them unless "
            "--no-copy-tokenizer)."
        ) from e
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), **common, **gguf_kwargs, **_dtype_kwargs(transformers, dtype)
        )
    except Exception as e:
        raise EvaluationError(
            f"{label}: cannot load {path} as a causal language model ({type(e).__name__}: {e})."
        ) from e
    model.to(options.device)
    model.eval()
    return LoadedModel(label, path, model, tokenizer, _context(model.config))


@contextlib.contextmanager
def loaded(label: str, path: Path, options: EvalOptions) -> Iterator[LoadedModel]:
    """One model in memory at a time: loaded on entry, released on exit."""
    lm = load(label, path, options)
    try:
        yield lm
    finally:
        size = sum(p.numel() * p.element_size() for p in lm.model.parameters())
        del lm.model
        if size > BIG_MODEL_BYTES:  # a full collection takes a while: only when it pays
            gc.collect()
        if options.device.startswith("cuda"):
            torch.cuda.empty_cache()


def pad_id(tokenizer: Any) -> int:
    for cand in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if isinstance(cand, int):
            return cand
    return 0


def render_chat(
    tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool, where: str
) -> str:
    """The conversation as text, through the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise EvaluationError(
            f"{where}: the data has chat `messages`, but the tokenizer has no chat template; "
            "add one (chat_template.jinja, or `chat_template:` in the merge config) or use "
            "`text` records."
        )
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as e:
        raise EvaluationError(f"{where}: the chat template failed: {type(e).__name__}: {e}") from e
    return str(text)
