"""Small GGUF files written with the `gguf` package alone (not Alloy's writer), for the tests.

A file holds one tiny model of a mapped architecture; each 2-D tensor is stored in one of the
quantization types, round-robin, so one file covers them all. Types `gguf.quants` can quantize
are quantized from random floats; for the K-quants (which it only dequantizes) the blocks are
random bytes with finite float16 scales.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
# byte offsets of the float16 scales inside one block of each K-quant
K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}

HIDDEN, HEADS, KV_HEADS, FFN, VOCAB, LAYERS = 256, 4, 2, 256, 266, 2  # VOCAB: the tokenizer's
HEAD_DIM = HIDDEN // HEADS


def block_bytes(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random valid blocks of a K-quant for a ``rows x cols`` matrix (bytes, rows x row bytes)."""
    block, size = gguf.GGML_QUANT_SIZES[Q[qtype]]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for off in K_SCALES[qtype]:
        scale = rng.uniform(0.001, 0.02, size=(rows, cols // block)).astype(np.float16)
        raw[:, :, off : off + 2] = scale.view(np.uint8).reshape(rows, cols // block, 2)
    return raw.reshape(rows, -1)


def encode(values: np.ndarray, qtype: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(array to write, ggml type) for float32 ``values`` stored as ``qtype``."""
    if qtype == "F32":
        return values.astype(np.float32), int(Q.F32)
    if qtype == "F16":
        return values.astype(np.float16), int(Q.F16)
    if qtype in K_SCALES:
        return block_bytes(qtype, values.shape[0], values.shape[1], rng), int(Q[qtype])
    return gguf.quants.quantize(values.astype(np.float32), Q[qtype]), int(Q[qtype])


def tensor_shapes(arch: str, tied: bool) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> row-major shape for a tiny model of ``arch``."""
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        b = f"blk.{i}."
        shapes |= {
            b + "attn_norm.weight": (HIDDEN,),
            b + "attn_q.weight": (HEADS * HEAD_DIM, HIDDEN),
            b + "attn_k.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            b + "attn_v.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            b + "attn_output.weight": (HIDDEN, HEADS * HEAD_DIM),
            b + "ffn_norm.weight": (HIDDEN,),
            b + "ffn_gate.weight": (FFN, HIDDEN),
            b + "ffn_up.weight": (FFN, HIDDEN),
            b + "ffn_down.weight": (HIDDEN, FFN),
        }
        if arch == "qwen2":
            for p, n in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
                shapes[b + f"attn_{p}.bias"] = (n * HEAD_DIM,)
        if arch == "gemma3":
            shapes |= {
                b + "attn_q_norm.weight": (HEAD_DIM,),
                b + "attn_k_norm.weight": (HEAD_DIM,),
                b + "post_attention_norm.weight": (HIDDEN,),
                b + "post_ffw_norm.weight": (HIDDEN,),
            }
    shapes["output_norm.weight"] = (HIDDEN,)
    if not tied:
        shapes["output.weight"] = (VOCAB, HIDDEN)
    return shapes


def _add_metadata(w: object, meta: dict[str, object]) -> None:
    for key, value in meta.items():
        if isinstance(value, bool):
            w.add_bool(key, value)  # type: ignore[attr-defined]
        elif isinstance(value, str):
            w.add_string(key, value)  # type: ignore[attr-defined]
        elif isinstance(value, list):
            w.add_array(key, value)  # type: ignore[attr-defined]
        else:
            w.add_uint32(key, int(value))  # type: ignore[attr-defined, call-overload]


def write_model(
    path: Path,
    arch: str,
    *,
    types: list[str] = TYPES,
    tied: bool = False,
    seed: int = 0,
    tokenizer: str | None = None,
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Write a tiny ``arch`` GGUF to ``path`` (with a tokenizer of pre-tokenizer ``tokenizer``);
    return {GGUF name: (type, shape)}."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    if tokenizer is not None:
        _add_metadata(w, tokenizer_metadata(tokenizer))
    w.add_uint32(f"{arch}.block_count", LAYERS)
    w.add_uint32(f"{arch}.context_length", 128)
    w.add_uint32(f"{arch}.embedding_length", HIDDEN)
    w.add_uint32(f"{arch}.feed_forward_length", FFN)
    w.add_uint32(f"{arch}.attention.head_count", HEADS)
    w.add_uint32(f"{arch}.attention.head_count_kv", KV_HEADS)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_uint32(f"{arch}.vocab_size", VOCAB)
    if arch == "llama":
        w.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM)
    if arch == "gemma3":
        w.add_uint32(f"{arch}.attention.key_length", HEAD_DIM)
        w.add_uint32(f"{arch}.attention.value_length", HEAD_DIM)
        w.add_uint32(f"{arch}.attention.sliding_window", 64)
    stored: dict[str, tuple[str, tuple[int, ...]]] = {}
    k = 0
    for name, shape in tensor_shapes(arch, tied).items():
        values = rng.standard_normal(shape).astype(np.float32) * 0.05
        if len(shape) == 1:
            qtype = "F32"
            values = values + 1.0
        else:
            qtype, k = types[k % len(types)], k + 1
        data, raw = encode(values, qtype, rng)
        w.add_tensor(name, data, raw_dtype=Q(raw))
        stored[name] = (qtype, shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def tokenizer_metadata(pre: str, add_bos: bool = False) -> dict[str, object]:
    """A small byte-level BPE vocabulary: the 256 byte symbols, a few merges, a control token
    and a user-defined one, padded to VOCAB entries."""
    from tokenizers.pre_tokenizers import ByteLevel

    tokens = sorted(ByteLevel.alphabet())
    merges = ["Ġ t", "h e", "Ġt he", "l l", "o r", "Ġ w", "Ġw or", "1 2"]
    tokens += ["Ġt", "he", "Ġthe", "ll", "or", "Ġw", "Ġwor", "12"]
    types = [1] * len(tokens)
    tokens += ["<|endoftext|>", "<think>"]
    types += [3, 4]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": len(tokens) - 2,
        "tokenizer.ggml.eos_token_id": len(tokens) - 2,
        "tokenizer.chat_template": "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}",
        "tokenizer.ggml.add_bos_token": add_bos,
    }


def write_tokenizer_only(path: Path, pre: str, add_bos: bool = False) -> dict[str, object]:
    """A GGUF holding only llama metadata and a tokenizer (enough for the tokenizer loaders)."""
    meta = tokenizer_metadata(pre, add_bos)
    w = gguf.GGUFWriter(str(path), "llama")
    _add_metadata(w, meta)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return meta
