"""Tiny llama checkpoints whose BPE tokenizers really differ, built with `tokenizers`, no network.

- ``base``: a byte-level BPE trained on a small corpus, with ``<unk> <s> </s>`` as specials;
- ``ft_added``: the base's tokenizer plus special added tokens ``<|im_start|> <|im_end|>`` and a
  plain added token ``zebra`` (the embedding grows by three rows);
- ``ft_reordered``: the base's vocabulary with ids permuted, plus an extra vocabulary token
  ``Ġquokka`` (a BPE entry the base lacks) and an added token ``<tool>`` only it has.

Each fine-tune's row of a token the base has is the base's row of that token plus a small delta
(so aligning the rows matters); its own tokens get random rows. Every tensor is float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a merge of models keeps what each model learned",
    "tokens and embeddings line up when the vocabularies agree",
    "the fox and the dog merge their quick models",
] * 8
HIDDEN = 16
SPECIALS = ["<unk>", "<s>", "</s>"]


@dataclass(frozen=True)
class VocabModels:
    base: Path
    ft_added: Path
    ft_reordered: Path


def _train_base_tokenizer() -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=120,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:40],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return json.loads(tok.to_str())


def _save_tokenizer(data: dict, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 64,
        "clean_up_tokenization_spaces": False,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _added(content: str, id_: int, special: bool) -> dict:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": not special,
        "special": special,
    }


def _vocab_of(data: dict) -> dict[str, int]:
    vocab = dict(data["model"]["vocab"])
    vocab.update({a["content"]: a["id"] for a in data["added_tokens"]})
    return vocab


def _model_config(vocab_size: int, tied: bool = False) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": vocab_size,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }


def _base_weights(vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(**_model_config(vocab_size))
    model = transformers.LlamaForCausalLM(cfg)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _write(path: Path, weights: dict[str, torch.Tensor], vocab_size: int, tied: bool) -> None:
    """A tied model stores no ``lm_head.weight`` (its input embedding stands in)."""
    if tied:
        weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(_model_config(vocab_size, tied), indent=2))


def _fine_tune(
    base: dict[str, torch.Tensor],
    base_vocab: dict[str, int],
    vocab: dict[str, int],
    seed: int,
) -> dict[str, torch.Tensor]:
    """The base's tensors plus deltas; token rows placed by token text (``vocab``'s ids)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in base.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = torch.randn((len(vocab), t.shape[1]), generator=gen) * 0.02
            for token, i in vocab.items():
                if token in base_vocab:
                    rows[i] = t[base_vocab[token]] + 0.01 * torch.randn(t.shape[1], generator=gen)
            out[name] = rows.contiguous()
        else:
            out[name] = (t + 0.01 * torch.randn(t.shape, generator=gen)).contiguous()
    return out


def build_vocab_models(root: Path, tied: tuple[bool, bool, bool] = (False,) * 3) -> VocabModels:
    """The three models under ``root``; ``tied``: which of (base, ft_added, ft_reordered) tie
    their head to their input embedding."""
    data = _train_base_tokenizer()
    base_vocab = _vocab_of(data)
    n = len(base_vocab)

    base = root / "base"
    _save_tokenizer(data, base)
    weights = _base_weights(n, seed=0)
    _write(base, weights, n, tied[0])

    added = json.loads(json.dumps(data))
    added["added_tokens"] += [
        _added("<|im_start|>", n, True),
        _added("<|im_end|>", n + 1, True),
        _added("zebra", n + 2, False),
    ]
    ft_added = root / "ft_added"
    _save_tokenizer(added, ft_added)
    vocab = _vocab_of(added)
    _write(ft_added, _fine_tune(weights, base_vocab, vocab, seed=1), len(vocab), tied[1])

    reordered = json.loads(json.dumps(data))
    plain = sorted(reordered["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = [(t, i) for t, i in plain if t in SPECIALS]
    rest = [t for t, _ in plain if t not in SPECIALS]
    rest = rest[1::2] + rest[0::2]  # every id after the specials moves
    new_vocab = {t: i for t, i in specials}
    for t in [*rest, "Ġquokka"]:
        new_vocab[t] = len(new_vocab)
    reordered["model"]["vocab"] = new_vocab
    for a in reordered["added_tokens"]:
        a["id"] = new_vocab[a["content"]]
    reordered["added_tokens"].append(_added("<tool>", len(new_vocab), True))
    ft_reordered = root / "ft_reordered"
    _save_tokenizer(reordered, ft_reordered)
    vocab = _vocab_of(reordered)
    _write(ft_reordered, _fine_tune(weights, base_vocab, vocab, seed=2), len(vocab), tied[2])
    return VocabModels(base, ft_added, ft_reordered)
