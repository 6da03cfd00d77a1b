"""Counter-based random bits: a pure function of (key, flat element index).

DARE and DELLA keep each task-vector entry with some probability. Their random draws come from
SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"), used
as a counter-based generator: the ``j``-th draw of a stream with key ``k`` is
``mix(k + (j + 1)·γ)``. A draw depends only on the key and the element's flat index, never on
how the tensor is cut into chunks, on the order tensors are merged in, or on the device: the
numba kernels (`alloy.kernels.fused`) and this torch version give the same bits.

A tensor's streams are rooted at a key derived from (seed, output tensor name)
(`alloy.plan.seeds.tensor_seed`), and each input's stream at a key mixed from that root and
the input's index (`alloy.methods.task_vectors.input_key`), so a merge is reproducible and
each input's mask is independent of the others'.
"""

from __future__ import annotations

import torch

GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / φ, SplitMix64's increment
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1
TWO32 = 1 << 32


def keep_threshold(p: float) -> int:
    """The 32-bit threshold ``t`` with ``P(draw < t) = t / 2^32 ≈ p`` (to within 2^-33)."""
    return min(TWO32, max(0, round(p * TWO32)))


def mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (the reference for the vectorised versions)."""
    z = (z ^ (z >> 30)) * MIX1 & MASK64
    z = (z ^ (z >> 27)) * MIX2 & MASK64
    return z ^ (z >> 31)


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 lanes holding unsigned 64-bit values."""
    return torch.bitwise_right_shift(z, bits) & ((1 << (64 - bits)) - 1)


def draws32(key: int, start: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 32-bit draws ``start .. start + count − 1`` of stream ``key``, as int64 in [0, 2^32).

    int64 multiplication wraps modulo 2^64 in torch, so the lanes carry the unsigned arithmetic
    of SplitMix64 bit for bit.
    """
    j = torch.arange(start + 1, start + count + 1, dtype=torch.int64, device=device)
    z = j * _signed(GOLDEN) + _signed(key & MASK64)
    z = (z ^ _shr(z, 30)) * _signed(MIX1)
    z = (z ^ _shr(z, 27)) * _signed(MIX2)
    z = z ^ _shr(z, 31)
    return _shr(z, 32)  # the high 32 bits


def uniform(key: int, start: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Draws as float64 in [0, 1): ``draws32 / 2^32`` (exact in float64)."""
    return draws32(key, start, count, device).to(torch.float64) / TWO32
