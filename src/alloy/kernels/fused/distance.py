"""The distance kernel of the merge report (`alloy.report.distance`): how far a merged chunk and
its sources lie from the base, in one read of each array."""

from __future__ import annotations

import numpy as np
from numba import njit

from alloy.kernels.fused.codec import BLOCK, _get


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def distance_sums(merged, sources, base):
    """``(Σ (merged − base)², [Σ (s − base)² for s in sources], Σ base²)`` in float64, block by
    block (the base's block is read once for all). ``merged`` may hold another dtype than the
    sources and the base (float32, or bfloat16 bits as uint16); the sums are vectorised
    (reassociated) in read-only loops, so their order is the same on every run of a machine."""
    m = base.shape[0]
    n = len(sources)
    out = np.zeros(n, np.float64)
    total = 0.0
    base_sq = 0.0
    b = np.empty(BLOCK, np.float32)
    for j0 in range(0, m, BLOCK):
        L = min(m, j0 + BLOCK) - j0
        acc = 0.0
        for t in range(L):
            b[t] = _get(base, j0 + t)
            acc += np.float64(b[t]) * b[t]
        base_sq += acc
        acc = 0.0
        for t in range(L):
            d = _get(merged, j0 + t) - b[t]
            acc += np.float64(d) * d
        total += acc
        for i in range(n):
            s = sources[i]
            acc = 0.0
            for t in range(L):
                d = _get(s, j0 + t) - b[t]
                acc += np.float64(d) * d
            out[i] += acc
    return total, out, base_sq
