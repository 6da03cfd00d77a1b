"""Fused CPU kernels (numba) for the merges that stream: one pass over memory, not twenty.

A merge written as torch operations reads and writes the whole chunk once per operation
(subtract, compare, mask, weigh, elect, sum, divide, cast: about 30 for TIES), and on the CPU
that memory traffic, not the arithmetic, sets the time. These kernels do all of it per element
in registers, in blocks of `BLOCK` elements that stay in the L1 cache, with the bf16 <-> float32
conversions inside. They release the GIL (``nogil``), so callers may run chunks on threads. They compute exactly what the torch implementations of the methods
compute (same operations, same order, float32), which the tests check element for element.

Inputs are 1-D arrays of float32, or of uint16 holding bfloat16 bits; outputs the same. Every
kernel is compiled on first use (and cached on disk by numba).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

BLOCK = 2048

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

MODE_NONE = 0  # task arithmetic: keep every entry
MODE_TOP = 1  # keep the top-k magnitudes (TIES)
MODE_WINDOW = 2  # keep a window of magnitude ranks (Breadcrumbs): top-k minus a smaller top
MODE_DARE = 3  # keep each entry with probability p (DARE)


@intrinsic
def _as_float32(typingctx, bits):  # type: ignore[no-untyped-def]
    """Reinterpret uint32 bits as a float32 (no conversion)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _as_uint32(typingctx, value):  # type: ignore[no-untyped-def]
    """Reinterpret a float32 as its uint32 bits (no conversion)."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


def _get(src, j):  # type: ignore[no-untyped-def]
    """``src[j]`` as float32 (``src`` holds float32, or bfloat16 bits as uint16)."""


@overload(_get, inline="always")
def _get_impl(src, j):  # type: ignore[no-untyped-def]
    if src.dtype == types.uint16:

        def impl(src, j):  # type: ignore[no-untyped-def]
            return _as_float32(np.uint32(src[j]) << np.uint32(16))

        return impl

    def impl(src, j):  # type: ignore[no-untyped-def]
        return np.float32(src[j])

    return impl


def _put(dst, j, value):  # type: ignore[no-untyped-def]
    """``dst[j] = value``, rounded to bfloat16 (nearest even) when ``dst`` holds uint16 bits."""


@overload(_put, inline="always")
def _put_impl(dst, j, value):  # type: ignore[no-untyped-def]
    if dst.dtype == types.uint16:

        def impl(dst, j, value):  # type: ignore[no-untyped-def]
            u = _as_uint32(value)
            if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN stays a quiet NaN
                dst[j] = np.uint16((u >> np.uint32(16)) | np.uint32(0x40))
            else:
                rounding = np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
                dst[j] = np.uint16((u + rounding) >> np.uint32(16))

        return impl

    def impl(dst, j, value):  # type: ignore[no-untyped-def]
        dst[j] = value

    return impl


@njit(inline="always")
def _draw32(key, j):  # type: ignore[no-untyped-def]
    """SplitMix64 draw ``j`` of stream ``key``, high 32 bits (see `alloy.kernels.random`)."""
    z = key + np.uint64(j + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return z >> np.uint64(32)


@njit(nogil=True, cache=True)
def linear_apply(xs, weights, divisor, out):  # type: ignore[no-untyped-def]
    """``out = (Σ_i w_i·x_i) / divisor``, summed in input order from ``w_0·x_0`` (no division
    when ``divisor`` is 1)."""
    m = out.shape[0]
    n = len(xs)
    nblocks = (m + BLOCK - 1) // BLOCK
    for blk in range(nblocks):
        j0 = blk * BLOCK
        L = min(m, j0 + BLOCK) - j0
        acc = np.empty(L, np.float32)
        x, w = xs[0], weights[0]
        for t in range(L):
            acc[t] = _get(x, j0 + t) * w
        for i in range(1, n):
            x, w = xs[i], weights[i]
            for t in range(L):
                acc[t] += _get(x, j0 + t) * w
        if divisor != np.float32(1):
            for t in range(L):
                acc[t] = acc[t] / divisor
        for t in range(L):
            _put(out, j0 + t, acc[t])


@njit(inline="always")
def _weighted(mode, x, j0, b, first, w, s, tau, cut, tau_top, cut_top, key, threshold, v):  # type: ignore[no-untyped-def]
    """``v = w·(s·δ)·keep`` for one input over a block, δ = x − b. ``keep`` is 0 or 1 and is
    multiplied in, not branched on: at density 0.5 a branch on the data would be mispredicted
    half the time. One loop per sparsifier, so each vectorizes."""
    L = v.shape[0]
    if mode == MODE_NONE:
        for t in range(L):
            v[t] = ((_get(x, j0 + t) - b[t]) * s) * w
    elif mode == MODE_TOP:
        for t in range(L):
            d = _get(x, j0 + t) - b[t]
            a = abs(d)
            keep = (a > tau) | ((a == tau) & (first + t <= cut))
            v[t] = ((d * s) * w) * np.float32(keep)
    elif mode == MODE_WINDOW:
        for t in range(L):
            d = _get(x, j0 + t) - b[t]
            a = abs(d)
            keep = (a > tau) | ((a == tau) & (first + t <= cut))
            top = (a > tau_top) | ((a == tau_top) & (first + t <= cut_top))
            v[t] = ((d * s) * w) * np.float32(keep & ~top)
    else:  # MODE_DARE
        for t in range(L):
            d = _get(x, j0 + t) - b[t]
            keep = _draw32(key, first + t) < threshold
            v[t] = ((d * s) * w) * np.float32(keep)


@njit(nogil=True, cache=True)
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
    """The task-arithmetic family on one chunk (see `alloy.methods.task_vectors`)::

        δ_i = x_i − b;  δ̂_i = keep_i·δ_i·scale_i;  W_i = w_i·δ̂_i
        elect:  γ = [Σ W_i ≥ 0];  a_i = [sgn W_i = γ];  Δ = Σ a_i W_i / (Σ a_i w_i or 1)
        else:   Δ = Σ W_i / divisor
        out = b + λ·Δ          (the divisions only when ``divide``)

    ``keep_i``: MODE_NONE 1; MODE_TOP |δ| in the top cut (``tau``, ``cut``: the flat index of
    the last value equal to tau that is kept); MODE_WINDOW in that cut but not in the top
    (``tau_top``, ``cut_top``); MODE_DARE draw < threshold (``keys``: the inputs' streams).
    ``start`` is the chunk's first flat index.
    """
    m = out.shape[0]
    n = len(xs)
    nblocks = (m + BLOCK - 1) // BLOCK
    b = np.empty(BLOCK, np.float32)
    mixed = np.empty(BLOCK, np.float32)
    total = np.empty(BLOCK, np.float32)
    wsum = np.empty(BLOCK, np.float32)
    W = np.empty((n, BLOCK), np.float32)  # W_i of every input, kept for the election
    for blk in range(nblocks):
        j0 = blk * BLOCK
        L = min(m, j0 + BLOCK) - j0
        first = start + j0
        for t in range(L):
            b[t] = _get(base, j0 + t)
            mixed[t] = 0
        for i in range(n):
            v = W[i, :L]
            _weighted(
                mode,
                xs[i],
                j0,
                b,
                first,
                weights[i],
                scales[i],
                tau[i],
                cut[i],
                tau_top[i],
                cut_top[i],
                keys[i],
                thresholds[i],
                v,
            )
            if not elect:
                for t in range(L):
                    mixed[t] += v[t]
        if elect:
            for t in range(L):
                total[t] = 0
                wsum[t] = 0
            for i in range(n):
                v = W[i, :L]
                for t in range(L):
                    total[t] += v[t]
            for i in range(n):
                v = W[i, :L]
                w = weights[i]
                for t in range(L):
                    pos = total[t] >= np.float32(0)
                    agree = np.float32(((v[t] > 0) & pos) | ((v[t] < 0) & ~pos))
                    mixed[t] += v[t] * agree
                    wsum[t] += w * agree
            if divide:
                for t in range(L):
                    q = wsum[t] + np.float32(wsum[t] == np.float32(0))  # none agree: divide by 1
                    mixed[t] = mixed[t] / q
        elif divide:
            for t in range(L):
                mixed[t] = mixed[t] / divisor
        for t in range(L):
            _put(out, j0 + t, b[t] + lam * mixed[t])


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def pair_dots(a, b):  # type: ignore[no-untyped-def]
    """(Σ a², Σ b², Σ a·b) in float64, for SLERP's angle: one read-only loop, vectorised
    (reassociated) the same way on every run of a machine."""
    aa = 0.0
    bb = 0.0
    ab = 0.0
    for j in range(a.shape[0]):
        x = np.float64(_get(a, j))
        y = np.float64(_get(b, j))
        aa += x * x
        bb += y * y
        ab += x * y
    return aa, bb, ab


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def gram(xs):  # type: ignore[no-untyped-def]
    """``G[i, j] = Σ x_i·x_j`` (float64, block by block): norms and dot products of the inputs,
    for SLERP's angle and for the weights' geometry. The sums are vectorised (reassociated) in
    loops that only read, so their order is the same on every run of a machine."""
    n = len(xs)
    m = xs[0].shape[0]
    g = np.zeros((n, n), np.float64)
    v = np.empty((n, BLOCK), np.float64)
    part = np.zeros((n, n), np.float64)
    for j0 in range(0, m, BLOCK):
        L = min(m, j0 + BLOCK) - j0
        for i in range(n):
            x = xs[i]
            for t in range(L):
                v[i, t] = _get(x, j0 + t)
        for i in range(n):
            for k in range(i, n):
                acc = 0.0
                for t in range(L):
                    acc += v[i, t] * v[k, t]
                part[i, k] = acc
        for i in range(n):
            for k in range(i, n):
                g[i, k] += part[i, k]
    for i in range(n):
        for k in range(i):
            g[i, k] = g[k, i]
    return g


@njit(nogil=True, cache=True, inline="always")
def _collect(a, gid, L, offset, pos_in, where, wmag, found):  # type: ignore[no-untyped-def]
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


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def bracket(x, base, start, lo, hi, glo, ghi, sums, where, wmag):  # type: ignore[no-untyped-def]
    """One chunk of a top-k count (`alloy.methods.select`) on ``|x − base|``.

    Returns, per bracket ``[lo[k], hi[k]]``, the number of values above it and their sum, then
    Σ of all values, then per disjoint group ``[glo[g], ghi[g]]`` (the brackets, overlapping
    ones merged) the number of values inside it, written with their flat indices to
    ``where[g]`` and ``wmag[g]`` (rows one element longer than the chunk). The sums (for the
    L1 rescale) are computed only when ``sums`` is true; their float64 order may vary between
    machines."""
    m = x.shape[0]
    nb = lo.shape[0]
    ng = glo.shape[0]
    above = np.zeros(nb, np.int64)
    above_sum = np.zeros(nb, np.float64)
    total = 0.0
    found = np.zeros(max(ng, 1), np.int64)
    a = np.empty(BLOCK, np.float32)
    gid = np.empty(BLOCK, np.int8)
    pos_in = np.empty(BLOCK + 1, np.int32)
    for j0 in range(0, m, BLOCK):
        L = min(m, j0 + BLOCK) - j0
        for t in range(L):
            a[t] = abs(_get(x, j0 + t) - _get(base, j0 + t))
            gid[t] = 0
        if sums:
            blk = 0.0
            for t in range(L):
                blk += a[t]
            total += blk
        for k in range(nb):
            h = hi[k]
            c = 0
            for t in range(L):
                c += a[t] > h
            above[k] += c
            if sums:
                blk = 0.0
                for t in range(L):
                    blk += np.float64(a[t]) * (a[t] > h)
                above_sum[k] += blk
        for g in range(ng):
            gl, gh = glo[g], ghi[g]
            for t in range(L):
                gid[t] += np.int8(g + 1) * ((a[t] >= gl) & (a[t] <= gh))
        _collect(a, gid, L, start + j0, pos_in, where, wmag, found)
    return above, above_sum, total, found


@njit(nogil=True, cache=True, fastmath={"reassoc"}, inline="always")
def _sum_squares(v, L):  # type: ignore[no-untyped-def]
    """Σ v[t]² for t < L in float64 (a read-only loop: vectorised the same way every run)."""
    acc = 0.0
    for t in range(L):
        acc += np.float64(v[t]) * v[t]
    return acc


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def task_vector_pass(xs, base, lo, hi, glo, ghi, dk, sums, counts, where, wmag, unsure, udelta):  # type: ignore[no-untyped-def]
    """One pass of `alloy.analysis.stats` over a chunk of task vectors ``δ_i = x_i − base``:
    every additive statistic, the counts of the top-k searches, and the sign conflicts.

    Per input ``i`` and rank ``k``, ``[lo[i, k], hi[i, k]]`` brackets the k-th largest |δ_i|
    (``hi = −inf``: everything is kept; ``lo = hi = +inf``: nothing); ``glo``/``ghi`` [i, g] are
    the brackets merged into disjoint groups (``glo > ghi``: unused). Rank ``dk`` is the TIES
    density of the conflict count.

    Accumulated into ``sums`` (float64): Σ base², Σ δ_i² [n], Σ δ_i·δ_j [pairs], Σ δ_i² above
    each bracket [n, K] (summed per block in float32). Into ``counts`` (int64): δ_i ≠ 0 [n], non-finite δ_i [n], values above
    each bracket [n, K], then overlap and conflict: entries two or more inputs keep nonzero at
    rank ``dk``, and those with both signs, counted where every input's keep is certain.

    Returns (found [n, groups], unsure count): ``where[i, g, :found[i, g]]`` are the positions
    (in the chunk) of the entries whose |δ_i| lies in input i's group g, and
    ``wmag[i, g, :found[i, g]]`` their |δ_i|; ``unsure[:count]`` are the positions where some input's keep at rank ``dk`` is
    uncertain (inside its bracket), to be settled once the cuts are known, and
    ``udelta[:, :count]`` every input's δ there. Each array holds one element more than the
    chunk (per row). Loops that write arrays and loops that sum floats
    are kept apart: a float sum in a loop that also writes may be vectorised or not depending
    on where the arrays lie, and so be rounded differently from one run to the next."""
    n = len(xs)
    m = base.shape[0]
    nk = lo.shape[1]
    ng = glo.shape[1]
    npairs = n * (n - 1) // 2
    b = np.empty(BLOCK, np.float32)
    d = np.empty((n, BLOCK), np.float32)
    a = np.empty(BLOCK, np.float32)
    pos = np.empty(BLOCK, np.int32)
    neg = np.empty(BLOCK, np.int32)
    maybe = np.empty(BLOCK, np.int32)
    gid = np.empty(BLOCK, np.int8)
    found = np.zeros((n, max(ng, 1)), np.int64)
    pos_in = np.empty(BLOCK + 1, np.int32)
    nu = 0
    for j0 in range(0, m, BLOCK):
        L = min(m, j0 + BLOCK) - j0
        for t in range(L):
            b[t] = _get(base, j0 + t)
            pos[t] = 0
            neg[t] = 0
            maybe[t] = 0
        sums[0] += _sum_squares(b, L)
        for i in range(n):
            x = xs[i]
            hd, ld = hi[i, dk], lo[i, dk]
            for t in range(L):
                v = _get(x, j0 + t) - b[t]
                d[i, t] = v
                av = abs(v)
                a[t] = av
                sure = av > hd
                pos[t] += sure & (v > 0)
                neg[t] += sure & (v < 0)
                maybe[t] += (av >= ld) & ~sure & (av != 0)
            sq = 0.0
            nz = 0
            bad = 0
            for t in range(L):
                sq += np.float64(a[t]) * a[t]
                nz += a[t] != 0
                bad += _as_uint32(a[t]) & np.uint32(0x7F800000) == np.uint32(0x7F800000)
            sums[1 + i] += sq
            counts[i] += nz
            counts[n + i] += bad
            for k in range(nk):  # a block's energy in float32 (twice the lanes), then float64
                h = hi[i, k]
                c = 0
                e = np.float32(0.0)
                for t in range(L):
                    over = a[t] > h
                    c += over
                    e += a[t] * a[t] * over
                counts[2 * n + i * nk + k] += c
                sums[1 + n + npairs + i * nk + k] += e
            for t in range(L):
                gid[t] = 0
            for g in range(ng):
                gl, gh = glo[i, g], ghi[i, g]
                for t in range(L):
                    gid[t] += np.int8(g + 1) * ((a[t] >= gl) & (a[t] <= gh))
            _collect(a, gid, L, j0, pos_in, where[i], wmag[i], found[i])
        p = 0
        for i in range(n):
            for k in range(i + 1, n):
                acc = 0.0
                for t in range(L):
                    acc += np.float64(d[i, t]) * d[k, t]
                sums[1 + n + p] += acc
                p += 1
        overlap = 0
        conflict = 0
        for t in range(L):
            certain = maybe[t] == 0
            overlap += certain & (pos[t] + neg[t] >= 2)
            conflict += certain & (pos[t] > 0) & (neg[t] > 0)
        counts[2 * n + n * nk] += overlap
        counts[2 * n + n * nk + 1] += conflict
        for t in range(L):  # rare: a branch
            if maybe[t] != 0:
                unsure[nu] = j0 + t
                for i in range(n):
                    udelta[i, nu] = d[i, t]
                nu += 1
    return found, nu


@njit(nogil=True, cache=True)
def count_nonfinite(x):  # type: ignore[no-untyped-def]
    """How many of ``x`` (float32, or bfloat16 bits) are NaN or ±inf: all exponent bits set."""
    m = x.shape[0]
    bad = 0
    for j in range(m):
        bad += _as_uint32(_get(x, j)) & np.uint32(0x7F800000) == np.uint32(0x7F800000)
    return bad


def set_threads(n: int | None) -> None:
    """Use ``n`` threads for the kernels (None: all cores)."""
    numba.set_num_threads(n or numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
