"""Tiny real Hugging Face checkpoints, built on disk without network.

`make_model(kind, path, seed=...)` writes a randomly initialised model of a tiny architecture;
`make_model(kind, path, seed=..., base=other)` writes a "fine-tune": the base's tensors plus
seeded random deltas of relative size `delta_scale` (||delta|| / ||W|| per tensor), with a few
tensors given sparse deltas (about 10% of entries), as real fine-tunes have.

Layouts written: safetensors single file or sharded (`model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json`), or PyTorch pickles (`pytorch_model.bin`, or sharded with
`pytorch_model.bin.index.json`). Causal-LM directories also get generation_config.json, and
llama/qwen2 get a small `tokenizers` tokenizer (tokenizer.json + tokenizer_config.json).
Every model is well under 1 MB.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
VOCAB = 128

# One config per kind: (config class name, model class name, config kwargs, has tokenizer).
_TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
_COMMON = {"vocab_size": VOCAB, "max_position_embeddings": 64, **_TOKENS}
KINDS: dict[str, tuple[str, str, dict[str, Any], bool]] = {
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            **_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "tie_word_embeddings": False,
        },
        True,
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {
            **_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
        },
        True,
    ),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        {
            **_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "tie_word_embeddings": False,
        },
        False,
    ),
    "gemma": (
        "GemmaConfig",
        "GemmaForCausalLM",
        {
            **_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 8,
        },
        False,
    ),
    "phi3": (
        "Phi3Config",
        "Phi3ForCausalLM",
        {
            **_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "tie_word_embeddings": False,
        },
        False,
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {
            "vocab_size": VOCAB,
            "n_positions": 64,
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 4,
            **_TOKENS,
        },
        False,
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {
            **_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "tie_word_embeddings": False,
        },
        False,
    ),
    "bert": (
        "BertConfig",
        "BertForMaskedLM",
        {
            **_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        False,
    ),
}

# Weight files a checkpoint directory may hold; removed when a directory is rewritten.
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def make_model(
    kind: str,
    path: str | Path,
    *,
    seed: int,
    dtype: str = "float32",
    shards: int = 1,
    fmt: str = "safetensors",
    base: str | Path | None = None,
    delta_scale: float = 0.01,
) -> Path:
    """Write a tiny checkpoint of `kind` into `path` and return `path`.

    Without `base`: a fresh random model (seeded), saved with `save_pretrained`.
    With `base` (a directory written by this function for the same kind): the base's tensors
    plus seeded deltas; config, generation config and tokenizer are copied from the base.
    `shards` > 1 splits the weights into that many files with an index; `fmt` is
    "safetensors" or "bin".
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {sorted(KINDS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(DTYPES)}")
    if fmt not in ("safetensors", "bin"):
        raise ValueError(f"fmt must be 'safetensors' or 'bin', not {fmt!r}")
    if shards < 1:
        raise ValueError("shards must be >= 1")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    if base is None:
        state = _fresh_model(kind, path, seed=seed, dtype=dtype)
        if KINDS[kind][3]:
            write_tokenizer(path)
    else:
        base = Path(base)
        base_type = json.loads((base / "config.json").read_text())["model_type"]
        want_type = _config_class(kind).model_type
        if base_type != want_type:
            raise ValueError(f"base {base} is a {base_type!r} model, not {want_type!r}")
        for f in base.iterdir():
            if f.is_file() and not _is_weight_file(f):
                shutil.copy2(f, path / f.name)
        state = {
            name: t.to(DTYPES[dtype]) if t.is_floating_point() else t
            for name, t in load_state_dict(base).items()
        }
        state = _add_deltas(state, seed=seed, scale=delta_scale)
        _set_config_dtype(path, dtype)

    _clear_weights(path)
    write_weights(state, path, shards=shards, fmt=fmt)
    return path


def _config_class(kind: str) -> Any:
    import transformers

    return getattr(transformers, KINDS[kind][0])


def _fresh_model(kind: str, path: Path, *, seed: int, dtype: str) -> dict[str, torch.Tensor]:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    cfg_name, model_name, kwargs, _ = KINDS[kind]
    config = getattr(transformers, cfg_name)(**kwargs)
    config.architectures = [model_name]
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    # A trained model has no all-zero biases or all-one norms: give constant tensors noise,
    # so task vectors and merges see generic values.
    gen = torch.Generator().manual_seed(seed + 7919)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
    model = model.to(DTYPES[dtype])
    model.save_pretrained(path)
    return load_state_dict(path)


def _add_deltas(
    state: dict[str, torch.Tensor], *, seed: int, scale: float
) -> dict[str, torch.Tensor]:
    """Base + seeded deltas, ||delta|| ~ scale * ||W||; every 5th matrix gets ~10% nonzero."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(sorted(state)):
        w = state[name]
        if not w.is_floating_point():
            out[name] = w.clone()
            continue
        w32 = w.float()
        rms = float(w32.pow(2).mean().sqrt())
        delta = torch.randn(w.shape, generator=gen) * scale * max(rms, 1e-3)
        if i % 5 == 2 and w.numel() >= 256:
            delta = delta * (torch.rand(w.shape, generator=gen) < 0.1)
        ft = (w32 + delta).to(w.dtype)
        if w.dtype == torch.float32:
            ft = _untie_magnitudes(w32, ft)
        out[name] = ft.contiguous()
    return out


def _untie_magnitudes(base: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Nudge `ft` by single ulps until the nonzero |ft - base| of the tensor are all distinct.

    Magnitude pruning (TIES) keeps the top-k |delta|; with two equal magnitudes at the cut the
    choice depends on the sort's tie order, which no two implementations need to share.
    """
    ft = ft.clone().reshape(-1)
    flat_base = base.reshape(-1)
    for _ in range(20):
        mag = (ft - flat_base).abs()
        order = torch.argsort(mag)
        sorted_mag = mag[order]
        dup = (sorted_mag[1:] == sorted_mag[:-1]) & (sorted_mag[1:] > 0)
        if not bool(dup.any()):
            break
        idx = order[1:][dup]
        ft[idx] = torch.nextafter(ft[idx], ft[idx] + torch.sign(ft[idx] - flat_base[idx]))
    return ft.reshape(base.shape)


def write_weights(
    state: dict[str, torch.Tensor], path: str | Path, *, shards: int = 1, fmt: str = "safetensors"
) -> None:
    """Write `state` in Hugging Face layout: one file, or `shards` files plus an index."""
    path = Path(path)
    names = list(state)
    if shards > len(names):
        raise ValueError(f"cannot split {len(names)} tensors into {shards} shards")
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")

    def save(tensors: dict[str, torch.Tensor], file: Path) -> None:
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        if fmt == "safetensors":
            save_file(tensors, str(file), metadata={"format": "pt"})
        else:
            torch.save(tensors, file)

    if shards == 1:
        save(state, path / f"{stem}.{ext}")
        return
    # Contiguous groups of tensors balanced by bytes (by count if that leaves a shard empty).
    sizes = [state[n].numel() * state[n].element_size() for n in names]
    total = sum(sizes)
    starts = [sum(sizes[:i]) for i in range(len(names))]
    assign = [min(shards - 1, s * shards // total) for s in starts]
    if len(set(assign)) < shards:
        assign = [i * shards // len(names) for i in range(len(names))]
    groups: list[list[str]] = [[] for _ in range(shards)]
    for name, g in zip(names, assign, strict=True):
        groups[g].append(name)
    weight_map: dict[str, str] = {}
    for g, group in enumerate(groups):
        assert group, "empty shard"
        fname = f"{stem}-{g + 1:05d}-of-{shards:05d}.{ext}"
        save({n: state[n] for n in group}, path / fname)
        weight_map.update(dict.fromkeys(group, fname))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory (safetensors or .bin, sharded or not)."""
    path = Path(path)
    files: list[Path]
    for stem, ext in (("model", "safetensors"), ("pytorch_model", "bin")):
        index = path / f"{stem}.{ext}.index.json"
        single = path / f"{stem}.{ext}"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [path / f for f in sorted(set(weight_map.values()))]
            break
        if single.exists():
            files = [single]
            break
    else:
        raise FileNotFoundError(f"no model weights in {path}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    out[k] = st.get_tensor(k)
        else:
            out.update(torch.load(f, map_location="cpu", weights_only=True))
    return out


def weight_files(path: str | Path) -> list[str]:
    """Names of the weight files (and indexes) in a checkpoint directory, sorted."""
    return sorted(f.name for f in Path(path).iterdir() if _is_weight_file(f))


def _is_weight_file(f: Path) -> bool:
    return any(f.match(g) for g in _WEIGHT_GLOBS)


def _clear_weights(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file() and _is_weight_file(f):
            f.unlink()


def _set_config_dtype(path: Path, dtype: str) -> None:
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    key = "dtype" if "dtype" in cfg or "torch_dtype" not in cfg else "torch_dtype"
    cfg[key] = dtype
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def write_tokenizer(path: str | Path, vocab_size: int = VOCAB) -> None:
    """A word-level `tokenizers` tokenizer of `vocab_size` tokens: tokenizer.json + config."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    path = Path(path)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    words = specials + [f"w{i}" for i in range(vocab_size - len(specials))]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens(specials)
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "model_max_length": 64,
        "clean_up_tokenization_spaces": False,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


MakeModel = Callable[..., Path]


@dataclass(frozen=True)
class ModelSet:
    """A base checkpoint and two fine-tunes of it (directories)."""

    base: Path
    ft1: Path
    ft2: Path
    kind: str
    dtype: str


def make_model_set(root: Path, kind: str, dtype: str, *, base_shards: int) -> ModelSet:
    """Base (in `base_shards` files), ft1 (one file, delta 2%), ft2 (2 shards, delta 4%).

    ft2 moves further than ft1, so the pair is far enough apart (cos < 0.9995) that SLERP takes
    its spherical branch rather than its near-colinear lerp fallback on dense tensors.
    """
    base = make_model(kind, root / "base", seed=0, dtype=dtype, shards=base_shards)
    ft1 = make_model(kind, root / "ft1", seed=1, dtype=dtype, base=base, delta_scale=0.02)
    ft2 = make_model(kind, root / "ft2", seed=2, dtype=dtype, base=base, delta_scale=0.04, shards=2)
    return ModelSet(base=base, ft1=ft1, ft2=ft2, kind=kind, dtype=dtype)
