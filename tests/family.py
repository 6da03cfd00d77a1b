"""Constructed checkpoint families with known task-vector statistics, for analyze/recommend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tiny import tiny_tensors, write_tiny

Tensors = dict[str, torch.Tensor]
LAYERS, HIDDEN, VOCAB = 4, 32, 64


def base_tensors() -> Tensors:
    return tiny_tensors(0, layers=LAYERS, hidden=HIDDEN, vocab=VOCAB)


def write(path: Path, tensors: Tensors, **config: object) -> Path:
    write_tiny(path, 0, layers=LAYERS, tensors=tensors, config={"vocab_size": VOCAB, **config})
    return path


def family(
    root: Path, deltas: list[Callable[[str, torch.Tensor], torch.Tensor]], *, base: bool = True
) -> tuple[Path | None, list[Path], Tensors, list[Tensors]]:
    """Write a base (if ``base``) and one fine-tune per delta function ``(name, W) -> δ``.
    Returns the base path, the fine-tune paths, and the tensors written."""
    b = base_tensors()
    base_path = write(root / "base", b) if base else None
    paths, tensors = [], []
    for i, fn in enumerate(deltas):
        t = {k: v + fn(k, v) for k, v in b.items()}
        paths.append(write(root / f"ft{i + 1}", t))
        tensors.append(t)
    return base_path, paths, b, tensors


def noise(seed: int, scale: float) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """Dense Gaussian deltas, ``scale`` times each tensor's RMS, seeded by (seed, name)."""

    def fn(name: str, w: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, name)))
        rms = float(w.pow(2).mean().sqrt())
        return torch.randn(w.shape, generator=g) * scale * rms

    return fn
