"""A small byte-level BPE tokenizer trained on the demo's corpora, saved for transformers.

Byte-level, so any text encodes (no unknown token). ``<s>`` is prepended to every encoded text
(the template post-processor), so that a held-out document scored by `alloy.evaluate` starts the
way training sequences do; ``</s>`` ends each training example and stops generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A `PreTrainedTokenizerFast` trained on ``texts`` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    fast = cast(Callable[..., Any], PreTrainedTokenizerFast)  # its __init__ is untyped
    return fast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer: Any, out: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json, which `AutoTokenizer` loads."""
    tokenizer.save_pretrained(str(out))


def encode_examples(tokenizer: Any, texts: Iterable[str]) -> list[list[int]]:
    """Each text as ``<s> ... </s>`` token ids (the shape of a training example)."""
    eos = tokenizer.eos_token_id
    return [[*ids, eos] for ids in tokenizer(list(texts))["input_ids"]]
