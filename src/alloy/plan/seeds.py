"""Random generators seeded from (seed, output tensor name).

A tensor's random stream depends only on the seed and its own name, so a merge is
reproducible and independent of execution order and parallelism.
"""

from __future__ import annotations

import hashlib

import torch


def tensor_seed(seed: int, name: str, chunk: int = 0) -> int:
    digest = hashlib.sha256(f"{seed}\0{name}\0{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def tensor_generator(seed: int, name: str, device: torch.device, chunk: int = 0) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(tensor_seed(seed, name, chunk))
    return g
