"""The analysis kernels (`alloy.analysis.stats`): the Gram matrix of the inputs, and one fused
pass of task-vector statistics whose outputs are named arrays (`PassTotals`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from alloy.kernels.fused.codec import BLOCK, _as_uint32, _collect, _get


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def gram(xs):
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


@njit(nogil=True, cache=True, fastmath={"reassoc"}, inline="always")
def _sum_squares(v, L):
    """Σ v[t]² for t < L in float64 (a read-only loop: vectorised the same way every run)."""
    acc = 0.0
    for t in range(L):
        acc += np.float64(v[t]) * v[t]
    return acc


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def task_vector_pass(xs, base, lo, hi, glo, ghi, dk, sums, counts, where, wmag, unsure, udelta):
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


class PassTotals(NamedTuple):
    """What `task_vector_pass` accumulates, for ``n`` inputs and ``nk`` ranks: the two flat
    arrays the kernel adds to (``sums`` float64, ``counts`` int64) and named views of them."""

    sums: np.ndarray
    counts: np.ndarray
    base_sq: np.ndarray  # [1]    Σ base²
    sq: np.ndarray  # [n]         Σ δ_i²
    dot: np.ndarray  # [pairs]    Σ δ_i·δ_j, pairs (i < j) in row-major order
    above_sq: np.ndarray  # [n, nk]  Σ δ_i² above each rank's bracket
    changed: np.ndarray  # [n]    #{δ_i ≠ 0}
    nonfinite: np.ndarray  # [n]  #{δ_i not finite}
    above: np.ndarray  # [n, nk]  values above each rank's bracket
    overlap: np.ndarray  # [1]    entries two or more inputs keep nonzero (where certain)
    conflict: np.ndarray  # [1]   of those, entries with both signs


def pass_totals(n: int, nk: int) -> PassTotals:
    """Zeroed accumulators of `task_vector_pass` (the layout the kernel writes)."""
    npairs = n * (n - 1) // 2
    sums = np.zeros(1 + n + npairs + n * nk, np.float64)
    counts = np.zeros(2 * n + n * nk + 2, np.int64)
    return PassTotals(
        sums,
        counts,
        base_sq=sums[0:1],
        sq=sums[1 : 1 + n],
        dot=sums[1 + n : 1 + n + npairs],
        above_sq=sums[1 + n + npairs :].reshape(n, nk),
        changed=counts[:n],
        nonfinite=counts[n : 2 * n],
        above=counts[2 * n : 2 * n + n * nk].reshape(n, nk),
        overlap=counts[2 * n + n * nk : 2 * n + n * nk + 1],
        conflict=counts[2 * n + n * nk + 1 :],
    )
