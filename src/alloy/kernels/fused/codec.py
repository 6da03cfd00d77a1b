"""Shared numba primitives: bfloat16 <-> float32 in registers, SplitMix64 draws, and the
collector of bracketed values used by the count kernels."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

BLOCK = 2048

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@intrinsic
def _as_float32(typingctx, bits):
    """Reinterpret uint32 bits as a float32 (no conversion)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _as_uint32(typingctx, value):
    """Reinterpret a float32 as its uint32 bits (no conversion)."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


def _get(src, j):
    """``src[j]`` as float32 (``src`` holds float32, or bfloat16 bits as uint16).

    ``j`` is indexed as unsigned: numba wraps a signed index that could be negative
    (``j0 + t`` in a blocked loop), and that select per element keeps LLVM from vectorizing
    the loop (2.4 against 0.5 ns per element for a block of TIES). Callers pass ``j >= 0``."""


@overload(_get, inline="always")
def _get_impl(src, j):
    if src.dtype == types.uint16:

        def impl(src, j):
            return _as_float32(np.uint32(src[np.uint64(j)]) << np.uint32(16))

        return impl

    def impl(src, j):
        return np.float32(src[np.uint64(j)])

    return impl


def _put(dst, j, value):
    """``dst[j] = value``, rounded to bfloat16 (nearest even) when ``dst`` holds uint16 bits
    (``j`` unsigned, as in `_get`)."""


@overload(_put, inline="always")
def _put_impl(dst, j, value):
    if dst.dtype == types.uint16:

        def impl(dst, j, value):
            u = _as_uint32(value)
            if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN stays a quiet NaN
                dst[np.uint64(j)] = np.uint16((u >> np.uint32(16)) | np.uint32(0x40))
            else:
                rounding = np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
                dst[np.uint64(j)] = np.uint16((u + rounding) >> np.uint32(16))

        return impl

    def impl(dst, j, value):
        dst[np.uint64(j)] = value

    return impl


@njit(inline="always")
def _draw32(key, j):
    """SplitMix64 draw ``j`` of stream ``key``, high 32 bits (see `alloy.kernels.random`)."""
    z = key + np.uint64(j + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return z >> np.uint64(32)


@njit(nogil=True, cache=True, inline="always")
def _collect(a, gid, L, offset, pos_in, where, wmag, found):
    """Append a block's entries that lie in a group (``gid[t]`` = group + 1, 0: none) to their
    group's row: ``where[g, found[g]] = offset + t``, ``wmag[g, found[g]] = a[t]``."""
    f = 0
    for t in range(L):  # written always, kept by advancing: no branch on the data
        pos_in[f] = t
        f += gid[t] != 0
    for q in range(f):  # the few found, to their group's row
        t = pos_in[q]
        g = gid[t] - 1
        c = found[g]
        where[g, c] = offset + t
        wmag[g, c] = a[t]
        found[g] = c + 1
