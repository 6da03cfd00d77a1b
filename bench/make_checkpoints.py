"""Write synthetic Llama checkpoints (a base and two fine-tunes) for the merge benchmark.

Usage: make_checkpoints.py OUTDIR [--scale 7b|full|small]

Each model is a Hugging Face directory (config.json for LlamaForCausalLM plus sharded
safetensors with model.safetensors.index.json). Weights are random but deterministic: every
tensor is drawn from a generator seeded by (model seed, tensor name). A fine-tune is the base
plus a small Gaussian delta, which gives task vectors that look like those of real fine-tunes;
it reads its base tensors from the base written first (the same bits as drawing them again,
several times cheaper).

Generation streams one tensor at a time: a shard's safetensors header is computed from the
shapes before any weight exists, then each tensor is drawn, written and dropped, so memory is
bounded by the largest tensor (a few hundred MB in float32 at 7B), not by the shard or the
model. Free disk is checked before anything is written. A model directory is written under a
temporary name and renamed when complete; complete models are skipped on later runs, and so
are the complete shards of an interrupted one.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

BASE_STD = 0.02  # std of base weights (Llama initializer_range)
DELTA_STD = 0.002  # std of a fine-tune's delta: 10% of the base std
DTYPE = torch.bfloat16
BYTES_PER_ELEMENT = 2
INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class Shape:
    """Architecture hyper-parameters of a Llama model, plus the shard size to write."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_shard_bytes: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


SCALES: dict[str, Shape] = {
    # The Mistral-7B shape, ~14.5 GB in bf16, written as ~5 GB shards.
    "7b": Shape(4096, 14336, 32, 32, 8, 32000, max_shard_bytes=5_000_000_000),
    # The TinyLlama-1.1B shape, ~2.2 GB in bf16, written as ~1 GB shards.
    "full": Shape(2048, 5632, 22, 32, 4, 32000, max_shard_bytes=1_000_000_000),
    # A few MB; small shards so the smoke run still reads a multi-shard index.
    "small": Shape(256, 704, 4, 8, 2, 1000, max_shard_bytes=2_000_000),
}


@dataclass(frozen=True)
class ModelSpec:
    """One checkpoint to write: its directory name, and its delta seed (None for the base)."""

    name: str
    delta_seed: int | None


BASE_SEED = 1234
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("base", None),
    ModelSpec("ft1", 1),
    ModelSpec("ft2", 2),
)


def tensor_shapes(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """All tensor names and shapes of the model, in file order."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (shape.vocab, h))]
    for n in range(shape.layers):
        p = f"model.layers.{n}"
        tensors += [
            (f"{p}.input_layernorm.weight", (h,)),
            (f"{p}.self_attn.q_proj.weight", (h, h)),
            (f"{p}.self_attn.k_proj.weight", (kv, h)),
            (f"{p}.self_attn.v_proj.weight", (kv, h)),
            (f"{p}.self_attn.o_proj.weight", (h, h)),
            (f"{p}.post_attention_layernorm.weight", (h,)),
            (f"{p}.mlp.gate_proj.weight", (i, h)),
            (f"{p}.mlp.up_proj.weight", (i, h)),
            (f"{p}.mlp.down_proj.weight", (h, i)),
        ]
    tensors += [("model.norm.weight", (h,)), ("lm_head.weight", (shape.vocab, h))]
    return tensors


def tensor_bytes(dims: tuple[int, ...]) -> int:
    numel = 1
    for d in dims:
        numel *= d
    return numel * BYTES_PER_ELEMENT


def plan_shards(
    tensors: list[tuple[str, tuple[int, ...]]], max_shard_bytes: int
) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Group tensors greedily, in order, into shards of at most max_shard_bytes (unless a
    single tensor is larger)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, dims in tensors:
        nbytes = tensor_bytes(dims)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dims))
        size += nbytes
    return shards


def shard_filename(k: int, n: int) -> str:
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def tensor_seed(seed: int, name: str) -> int:
    """32-bit generator seed for one tensor of one model. The torch CPU generator only uses
    the low 32 bits of its seed, so (seed, name) is hashed rather than bit-packed."""
    return zlib.crc32(f"{seed}/{name}".encode())


def check_seeds_distinct(shape: Shape) -> None:
    """Guard against two tensors (of any model) drawing the same random stream."""
    names = [name for name, _ in tensor_shapes(shape)]
    seeds = [BASE_SEED] + [s.delta_seed for s in MODELS if s.delta_seed is not None]
    drawn = {tensor_seed(seed, name) for seed in seeds for name in names}
    if len(drawn) != len(seeds) * len(names):
        raise RuntimeError("tensor seeds collide; change BASE_SEED or the fine-tune seeds")


def seeded_normal(seed: int, name: str, dims: tuple[int, ...]) -> torch.Tensor:
    """Standard normal float32 tensor, determined by (seed, tensor name)."""
    generator = torch.Generator().manual_seed(tensor_seed(seed, name))
    return torch.randn(dims, generator=generator, dtype=torch.float32)


def base_tensor(name: str, dims: tuple[int, ...]) -> torch.Tensor:
    """Base weight in float32: norms around 1, matrices with std BASE_STD."""
    noise = seeded_normal(BASE_SEED, name, dims) * BASE_STD
    return noise.add_(1.0) if len(dims) == 1 else noise


@functools.lru_cache(maxsize=4)
def _weight_map(base_dir: Path) -> dict[str, str]:
    weight_map: dict[str, str] = json.loads((base_dir / INDEX_NAME).read_text())["weight_map"]
    return weight_map


def stored_base(base_dir: Path, name: str, dims: tuple[int, ...]) -> torch.Tensor:
    """The base tensor as written in base_dir: the same bits as base_tensor(...).to(DTYPE),
    read instead of drawn again (reading is several times cheaper than the draw)."""
    with safe_open(str(base_dir / _weight_map(base_dir)[name]), framework="pt") as f:
        tensor: torch.Tensor = f.get_tensor(name)
    if tuple(tensor.shape) != dims or tensor.dtype != DTYPE:
        raise SystemExit(f"{base_dir} holds {name} as {tensor.dtype} {tuple(tensor.shape)}")
    return tensor


def model_tensor(
    spec: ModelSpec, name: str, dims: tuple[int, ...], base_dir: Path | None = None
) -> torch.Tensor:
    """The bf16 tensor of one model: the base, plus a delta for a fine-tune. The delta is added
    to the bf16-rounded base so that the fine-tune's task vector is just the rounded delta.
    With base_dir (a complete base), a fine-tune reads its base tensor from there."""
    if spec.delta_seed is not None and base_dir is not None:
        base = stored_base(base_dir, name, dims)
    else:
        base = base_tensor(name, dims).to(DTYPE)
    if spec.delta_seed is None:
        return base
    delta = seeded_normal(spec.delta_seed, name, dims).mul_(DELTA_STD)
    return delta.add_(base.float()).to(DTYPE)


def hf_config(shape: Shape) -> dict[str, object]:
    """A config.json like TinyLlama's, for LlamaForCausalLM."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.vocab,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "initializer_range": BASE_STD,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0",
    }


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def safetensors_header(shard: list[tuple[str, tuple[int, ...]]]) -> bytes:
    """The length-prefixed JSON header of a bf16 safetensors file holding shard's tensors in
    order, padded with spaces to a multiple of 8 bytes as the format recommends."""
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dims in shard:
        nbytes = tensor_bytes(dims)
        entries[name] = {
            "dtype": "BF16",
            "shape": list(dims),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def shard_size(shard: list[tuple[str, tuple[int, ...]]]) -> int:
    """The file size of a complete shard: header plus data."""
    return len(safetensors_header(shard)) + sum(tensor_bytes(d) for _, d in shard)


def write_shard(
    spec: ModelSpec, shard: list[tuple[str, tuple[int, ...]]], path: Path, base_dir: Path | None
) -> int:
    """Write one shard, drawing and writing one tensor at a time; return its data bytes. A
    shard of the right size already there (from an interrupted run, written in order) is kept."""
    total = sum(tensor_bytes(d) for _, d in shard)
    if path.is_file() and path.stat().st_size == shard_size(shard):
        print(f"  {spec.name}: kept {path.name} from an earlier run", flush=True)
        return total
    with path.open("wb") as f:
        f.write(safetensors_header(shard))
        for name, dims in shard:
            tensor = model_tensor(spec, name, dims, base_dir).contiguous()
            assert tuple(tensor.shape) == dims and tensor.dtype == DTYPE
            f.write(tensor.view(torch.uint8).numpy().data)
            del tensor
    print(f"  {spec.name}: wrote {path.name}", flush=True)
    return total


def write_model(spec: ModelSpec, shape: Shape, out_dir: Path, base_dir: Path | None) -> None:
    """Write one model into out_dir, one tensor at a time (keeping complete shards of an
    interrupted run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(tensor_shapes(shape), shape.max_shard_bytes)
    weight_map: dict[str, str] = {}
    total = 0
    for k, shard in enumerate(shards, start=1):
        filename = shard_filename(k, len(shards))
        total += write_shard(spec, shard, out_dir / filename, base_dir)
        weight_map.update(dict.fromkeys((name for name, _ in shard), filename))
    write_json(out_dir / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(out_dir / "config.json", hf_config(shape))


def model_bytes(shape: Shape) -> int:
    """Bytes of one model's weights (the safetensors data, without headers)."""
    return sum(tensor_bytes(dims) for _, dims in tensor_shapes(shape))


def check_free_disk(outdir: Path, needed: int, what: str) -> None:
    """Stop with a clear message, before writing anything, if outdir's file system lacks room."""
    free = shutil.disk_usage(outdir).free
    if free < needed:
        raise SystemExit(
            f"{what} needs {needed / 1e9:.1f} GB free in {outdir}, which has {free / 1e9:.1f} GB: "
            "free some space or pass another directory"
        )
    print(f"disk: {what} needs {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free", flush=True)


def is_complete(model_dir: Path, shape: Shape) -> bool:
    """True if model_dir holds a finished checkpoint of this shape. Raises if it holds
    something else, so a checkpoint of the other scale is never silently overwritten."""
    if not model_dir.exists():
        return False
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"{model_dir} exists but has no config.json; remove it first")
    if json.loads(config_path.read_text()) != hf_config(shape):
        raise SystemExit(f"{model_dir} holds a checkpoint of another shape; remove it first")
    index = json.loads((model_dir / INDEX_NAME).read_text())
    return all((model_dir / f).is_file() for f in set(index["weight_map"].values()))


def ensure_model(spec: ModelSpec, shape: Shape, outdir: Path, base_dir: Path | None) -> Path:
    """Write the model unless a complete copy exists; return its directory. An interrupted
    run's complete shards (in OUTDIR/<name>.tmp) are kept."""
    final = outdir / spec.name
    if is_complete(final, shape):
        print(f"  {spec.name}: already present, skipped", flush=True)
        return final
    tmp = outdir / f"{spec.name}.tmp"
    done = sum(p.stat().st_size for p in tmp.glob("*.safetensors")) if tmp.is_dir() else 0
    check_free_disk(outdir, model_bytes(shape) - done, f"writing {spec.name}")
    start = time.perf_counter()
    write_model(spec, shape, tmp, base_dir)
    tmp.rename(final)
    print(f"  {spec.name}: done in {time.perf_counter() - start:.1f} s", flush=True)
    return final


def ensure_checkpoints(outdir: Path, scale: str) -> dict[str, Path]:
    """Make sure OUTDIR/{base,ft1,ft2} exist at the given scale; return name -> directory."""
    shape = SCALES[scale]
    check_seeds_distinct(shape)
    outdir.mkdir(parents=True, exist_ok=True)
    print(f"checkpoints ({scale} scale) in {outdir}", flush=True)
    missing = [s for s in MODELS if not is_complete(outdir / s.name, shape)]
    if missing:
        names = ", ".join(s.name for s in missing)
        partial = sum(p.stat().st_size for p in outdir.glob("*.tmp/*.safetensors"))
        check_free_disk(outdir, len(missing) * model_bytes(shape) - partial, f"writing {names}")
    dirs: dict[str, Path] = {}
    for spec in MODELS:  # the base first: the fine-tunes read their base tensors from it
        base_dir = dirs.get(MODELS[0].name) if spec.delta_seed is not None else None
        dirs[spec.name] = ensure_model(spec, shape, outdir, base_dir)
    return dirs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="directory to hold base/, ft1/ and ft2/")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ensure_checkpoints(args.outdir.resolve(), args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
