"""The merge kernels: linear, the task-vector pipeline, SLERP's dot products, the top-k count
(`alloy.methods.streamed`), and the executor's finiteness check."""

from __future__ import annotations

import numpy as np
from numba import njit

from alloy.kernels.fused.codec import BLOCK, _as_uint32, _collect, _draw32, _get, _put

MODE_NONE = 0  # task arithmetic: keep every entry
MODE_TOP = 1  # keep the top-k magnitudes (TIES)
MODE_WINDOW = 2  # keep a window of magnitude ranks (Breadcrumbs): top-k minus a smaller top
MODE_DARE = 3  # keep each entry with probability p (DARE)


@njit(nogil=True, cache=True, error_model="numpy")
def linear_apply(xs, weights, divisor, out):
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
def _weighted(mode, x, j0, b, first, w, s, tau, cut, tau_top, cut_top, key, threshold, v, total):
    """``v = w·(s·δ)·keep`` for one input over a block, δ = x − b, and ``total += v``. ``keep``
    is 0 or 1 and is multiplied in, not branched on: at density 0.5 a branch on the data would
    be mispredicted half the time. One loop per sparsifier, so each vectorizes."""
    L = v.shape[0]
    if mode == MODE_NONE:
        for t in range(L):
            val = ((_get(x, j0 + t) - b[t]) * s) * w
            v[t] = val
            total[t] += val
    elif mode == MODE_TOP:
        for t in range(L):
            d = _get(x, j0 + t) - b[t]
            a = abs(d)
            keep = (a > tau) | ((a == tau) & (first + t <= cut))
            val = ((d * s) * w) * np.float32(keep)
            v[t] = val
            total[t] += val
    elif mode == MODE_WINDOW:
        for t in range(L):
            d = _get(x, j0 + t) - b[t]
            a = abs(d)
            keep = (a > tau) | ((a == tau) & (first + t <= cut))
            top = (a > tau_top) | ((a == tau_top) & (first + t <= cut_top))
            val = ((d * s) * w) * np.float32(keep & ~top)
            v[t] = val
            total[t] += val
    else:  # MODE_DARE
        for t in range(L):
            d = _get(x, j0 + t) - b[t]
            keep = _draw32(key, first + t) < threshold
            val = ((d * s) * w) * np.float32(keep)
            v[t] = val
            total[t] += val


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _block_sq(x, j0, b, L):
    """``Σ_t (x[j0 + t] − b[t])²`` over a block, in float64 (the distance kernel's formula)."""
    acc = 0.0
    for t in range(L):
        d = _get(x, j0 + t) - b[t]
        acc += np.float64(d) * d
    return acc


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _block_sq_base(b, L):
    acc = 0.0
    for t in range(L):
        acc += np.float64(b[t]) * b[t]
    return acc


@njit(nogil=True, cache=True, error_model="numpy")
def gta_apply(
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
    dist,
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

    ``dist`` (float64, ``n + 2`` long, or empty for none) accumulates the merge report's
    distance sums (`alloy.report.distance`) while each block is in the cache: ``Σ (x_i − b)²``
    per input, then ``Σ (out − b)²`` of the values as written, then ``Σ b²``.
    """
    m = out.shape[0]
    n = len(xs)
    measure = dist.shape[0] > 0
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
            total[t] = 0  # Σ W_i, in input order
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
                total,
            )
        if elect:
            for t in range(L):
                mixed[t] = 0
                wsum[t] = 0
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
                    _put(out, j0 + t, b[t] + lam * (mixed[t] / q))
            else:
                for t in range(L):
                    _put(out, j0 + t, b[t] + lam * mixed[t])
        elif divide:
            for t in range(L):
                _put(out, j0 + t, b[t] + lam * (total[t] / divisor))
        else:
            for t in range(L):
                _put(out, j0 + t, b[t] + lam * total[t])
        if measure:
            for i in range(n):
                dist[i] += _block_sq(xs[i], j0, b, L)
            dist[n] += _block_sq(out, j0, b, L)
            dist[n + 1] += _block_sq_base(b, L)


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def pair_dots(a, b):
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
def bracket(x, base, start, lo, hi, glo, ghi, sums, where, wmag):
    """One chunk of a top-k count (`alloy.methods.streamed.select`) on ``|x − base|``.

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
        inside = 0  # most blocks hold no bracketed value: counted first, vectorized
        for g in range(ng):
            gl, gh = glo[g], ghi[g]
            c = 0
            for t in range(L):
                c += (a[t] >= gl) & (a[t] <= gh)
            inside += c
        if inside == 0:
            continue
        for t in range(L):
            gid[t] = 0
        for g in range(ng):
            gl, gh = glo[g], ghi[g]
            for t in range(L):
                gid[t] += np.int8(g + 1) * ((a[t] >= gl) & (a[t] <= gh))
        _collect(a, gid, L, start + j0, pos_in, where, wmag, found)
    return above, above_sum, total, found


@njit(nogil=True, cache=True)
def count_nonfinite(x):
    """How many of ``x`` (float32, or bfloat16 bits) are NaN or ±inf: all exponent bits set."""
    m = x.shape[0]
    bad = 0
    for j in range(m):
        bad += _as_uint32(_get(x, j)) & np.uint32(0x7F800000) == np.uint32(0x7F800000)
    return bad
