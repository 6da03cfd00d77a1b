"""Comparing two merged outputs: a few sampled tensors read from each, their names, dtypes,
shapes and largest relative difference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from settings import SAMPLED_TENSORS


def tensor_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, from the index if there is one."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: model_dir / fname for name, fname in weight_map.items()}
    files: dict[str, Path] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            files.update(dict.fromkeys(f.keys(), path))
    return files


def load_tensor(path: Path, name: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as f:
        tensor: torch.Tensor = f.get_tensor(name)
    return tensor


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the worst elementwise error, relative to the tensor's scale."""
    a32, b32 = a.float(), b.float()
    scale = b32.abs().max().item() or 1.0
    return (a32 - b32).abs().max().item() / scale


@dataclass
class Comparison:
    """Sampled tensors of Alloy's output against mergekit's (the reference)."""

    max_rel_diff: float | None
    per_tensor: dict[str, float]
    same_tensor_names: bool
    problems: list[str]


@dataclass
class Samples:
    """What the comparison needs of one output, kept in memory once the output is deleted:
    every tensor name, and the sampled tensors."""

    names: set[str]
    tensors: dict[str, torch.Tensor]


def read_samples(out_dir: Path) -> Samples:
    files = tensor_files(out_dir)
    tensors = {n: load_tensor(files[n], n) for n in SAMPLED_TENSORS if n in files}
    return Samples(set(files), tensors)


def compare_outputs(alloy: Samples, mergekit: Samples) -> Comparison:
    ours, theirs = alloy.names, mergekit.names
    per_tensor: dict[str, float] = {}
    problems: list[str] = []
    for name in SAMPLED_TENSORS:
        if name not in alloy.tensors or name not in mergekit.tensors:
            problems.append(f"{name} missing from {'alloy' if name not in ours else 'mergekit'}")
            continue
        a, b = alloy.tensors[name], mergekit.tensors[name]
        if a.shape != b.shape:
            problems.append(f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
            continue
        if a.dtype != b.dtype:
            problems.append(f"{name}: dtype {a.dtype} vs {b.dtype}")
        per_tensor[name] = relative_diff(a, b)
    if ours != theirs:
        problems.append(f"tensor names differ: {len(ours ^ theirs)} not in both")
    return Comparison(
        max_rel_diff=max(per_tensor.values()) if per_tensor else None,
        per_tensor=per_tensor,
        same_tensor_names=ours == theirs,
        problems=problems,
    )
