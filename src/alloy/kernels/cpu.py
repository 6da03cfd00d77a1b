"""Fused CPU kernels (numba) for the merges that stream: one pass over memory, not twenty.

A merge written as torch operations reads and writes the whole chunk once per operation
(subtract, compare, mask, weigh, elect, sum, divide, cast: about 30 for TIES), and on the CPU
that memory traffic, not the arithmetic, sets the time. These kernels do all of it per element
in registers, in blocks of `BLOCK` elements, with the bf16 <-> float32 conversions inside, on
all cores (``prange``). They compute exactly what the torch implementations of the methods
compute (same operations, same order, float32), which the tests check element for element.

Inputs are 1-D arrays of float32, or of uint16 holding bfloat16 bits; outputs the same. Every
kernel is compiled on first use (and cached on disk by numba).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

BLOCK = 2048

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

MODE_NONE = 0  # task arithmetic: keep every entry
MODE_TOP = 1  # keep the top-k magnitudes (TIES)
MODE_WINDOW = 2  # keep a window of magnitude ranks (Breadcrumbs): top-k minus a smaller top
MODE_DARE = 3  # keep each entry with probability p (DARE)


def _load(src, j0, buf):  # type: ignore[no-untyped-def]
    """Fill ``buf`` (float32) with ``src[j0 : j0 + len(buf)]`` as float32."""


@overload(_load, inline="always")
def _load_impl(src, j0, buf):  # type: ignore[no-untyped-def]
    if src.dtype == types.uint16:

        def impl(src, j0, buf):  # type: ignore[no-untyped-def]
            bits = buf.view(np.uint32)
            for t in range(buf.shape[0]):
                bits[t] = np.uint32(src[j0 + t]) << np.uint32(16)

        return impl

    def impl(src, j0, buf):  # type: ignore[no-untyped-def]
        for t in range(buf.shape[0]):
            buf[t] = src[j0 + t]

    return impl


def _store(buf, dst, j0):  # type: ignore[no-untyped-def]
    """Write float32 ``buf`` to ``dst[j0 : ...]``, rounding to bfloat16 (nearest even) for uint16."""


@overload(_store, inline="always")
def _store_impl(buf, dst, j0):  # type: ignore[no-untyped-def]
    if dst.dtype == types.uint16:

        def impl(buf, dst, j0):  # type: ignore[no-untyped-def]
            bits = buf.view(np.uint32)
            for t in range(buf.shape[0]):
                u = bits[t]
                if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN stays a quiet NaN
                    dst[j0 + t] = np.uint16((u >> np.uint32(16)) | np.uint32(0x40))
                else:
                    rounding = np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
                    dst[j0 + t] = np.uint16((u + rounding) >> np.uint32(16))

        return impl

    def impl(buf, dst, j0):  # type: ignore[no-untyped-def]
        for t in range(buf.shape[0]):
            dst[j0 + t] = buf[t]

    return impl


@njit(inline="always")
def _draw32(key, j):  # type: ignore[no-untyped-def]
    """SplitMix64 draw ``j`` of stream ``key``, high 32 bits (see `alloy.kernels.random`)."""
    z = key + np.uint64(j + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return z >> np.uint64(32)


@njit(inline="always")
def _in_top(a, tau, cut, idx):  # type: ignore[no-untyped-def]
    """|δ| = ``a`` at flat index ``idx`` is in a top-k whose `Cut` is (tau, cut index)."""
    return a > tau or (a == tau and idx <= cut)


@njit(parallel=True, cache=True)
def linear_apply(xs, weights, divisor, out):  # type: ignore[no-untyped-def]
    """``out = (Σ_i w_i·x_i) / divisor``, summed in input order from ``w_0·x_0`` (no division
    when ``divisor`` is 1)."""
    m = out.shape[0]
    n = len(xs)
    nblocks = (m + BLOCK - 1) // BLOCK
    for blk in prange(nblocks):
        j0 = blk * BLOCK
        L = min(m, j0 + BLOCK) - j0
        acc = np.empty(L, np.float32)
        buf = np.empty(L, np.float32)
        _load(xs[0], j0, buf)
        w0 = weights[0]
        for t in range(L):
            acc[t] = buf[t] * w0
        for i in range(1, n):
            _load(xs[i], j0, buf)
            w = weights[i]
            for t in range(L):
                acc[t] += buf[t] * w
        if divisor != np.float32(1):
            for t in range(L):
                acc[t] = acc[t] / divisor
        _store(acc, out, j0)


@njit(parallel=True, cache=True)
def gta_apply(  # type: ignore[no-untyped-def]
    xs,
    base,
    start,
    mode,
    weights,
    scales,
    tau,
    cut,
    tau_top,
    cut_top,
    keys,
    thresholds,
    elect,
    divide,
    divisor,
    lam,
    out,
):
    """The task-arithmetic family on one chunk (see `alloy.methods.task_arithmetic`)::

        δ_i = x_i − b;  δ̂_i = keep_i·δ_i·scale_i;  W_i = w_i·δ̂_i
        elect:  γ = [Σ W_i ≥ 0];  a_i = [sgn W_i = γ];  Δ = Σ a_i W_i / (Σ a_i w_i or 1)
        else:   Δ = Σ W_i / divisor
        out = b + λ·Δ          (the division only when ``divide``)

    ``keep_i``: MODE_NONE 1; MODE_TOP |δ| in the top cut (``tau``, ``cut``: the flat index of
    the last value equal to tau that is kept); MODE_WINDOW in that cut but not in the top
    (``tau_top``, ``cut_top``); MODE_DARE draw < threshold (``keys``: the inputs' streams).
    ``start`` is the chunk's first flat index.
    """
    m = out.shape[0]
    n = len(xs)
    nblocks = (m + BLOCK - 1) // BLOCK
    for blk in prange(nblocks):
        j0 = blk * BLOCK
        L = min(m, j0 + BLOCK) - j0
        b = np.empty(L, np.float32)
        x = np.empty(L, np.float32)
        total = np.zeros(L, np.float32)
        mixed = np.zeros(L, np.float32)
        wsum = np.zeros(L, np.float32)
        _load(base, j0, b)
        # W_i is recomputed in the second sweep rather than stored: n passes over L floats in
        # cache are cheaper than n arrays of W.
        for sweep in range(2 if elect else 1):
            for i in range(n):
                _load(xs[i], j0, x)
                w = weights[i]
                s = scales[i]
                for t in range(L):
                    d = x[t] - b[t]
                    idx = start + j0 + t
                    if mode == MODE_TOP:
                        keep = _in_top(abs(d), tau[i], cut[i], idx)
                    elif mode == MODE_WINDOW:
                        a = abs(d)
                        keep = _in_top(a, tau[i], cut[i], idx) and not _in_top(
                            a, tau_top[i], cut_top[i], idx
                        )
                    elif mode == MODE_DARE:
                        keep = _draw32(keys[i], idx) < thresholds[i]
                    else:
                        keep = True
                    W = (d * s) * w if keep else np.float32(0.0) * w
                    if not elect:
                        mixed[t] += W
                    elif sweep == 0:
                        total[t] += W
                    else:
                        pos = total[t] >= np.float32(0)
                        agree = W > 0 if pos else W < 0
                        if agree:
                            mixed[t] += W
                            wsum[t] += w
        for t in range(L):
            v = mixed[t]
            if divide:
                if elect:
                    v = v / (wsum[t] if wsum[t] != np.float32(0) else np.float32(1))
                else:
                    v = v / divisor
            x[t] = b[t] + lam * v
        _store(x, out, j0)


@njit(parallel=True, cache=True)
def dots(a, b):  # type: ignore[no-untyped-def]
    """(Σ a², Σ b², Σ a·b) in float64, blockwise; for SLERP's angle."""
    m = a.shape[0]
    nblocks = (m + BLOCK - 1) // BLOCK
    parts = np.zeros((nblocks, 3), np.float64)
    for blk in prange(nblocks):
        j0 = blk * BLOCK
        L = min(m, j0 + BLOCK) - j0
        x = np.empty(L, np.float32)
        y = np.empty(L, np.float32)
        _load(a, j0, x)
        _load(b, j0, y)
        aa = 0.0
        bb = 0.0
        ab = 0.0
        for t in range(L):
            aa += np.float64(x[t]) * x[t]
            bb += np.float64(y[t]) * y[t]
            ab += np.float64(x[t]) * y[t]
        parts[blk, 0] = aa
        parts[blk, 1] = bb
        parts[blk, 2] = ab
    return parts.sum(axis=0)


@njit(cache=True)
def bracket(x, base, start, lo, hi, values, indices):  # type: ignore[no-untyped-def]
    """One chunk of a top-k count (`alloy.methods.select`) on ``|x − base|``: returns
    (values > hi, their sum, Σ all values, values in [lo, hi] written to ``values`` and their
    flat indices to ``indices``)."""
    m = x.shape[0]
    above = 0
    above_sum = 0.0
    total = 0.0
    found = 0
    nblocks = (m + BLOCK - 1) // BLOCK
    xb = np.empty(BLOCK, np.float32)
    bb = np.empty(BLOCK, np.float32)
    for blk in range(nblocks):
        j0 = blk * BLOCK
        L = min(m, j0 + BLOCK) - j0
        _load(x, j0, xb[:L])
        _load(base, j0, bb[:L])
        for t in range(L):
            a = abs(xb[t] - bb[t])
            total += a
            if a > hi:
                above += 1
                above_sum += a
            elif a >= lo:
                values[found] = a
                indices[found] = start + j0 + t
                found += 1
    return above, above_sum, total, found


def set_threads(n: int | None) -> None:
    """Use ``n`` threads for the kernels (None: all cores)."""
    numba.set_num_threads(n or numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
