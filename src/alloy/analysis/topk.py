"""Exact per-tensor top-k of |δ| without sorting the tensor: a histogram, then one bucket.

Rounding a float32 to bfloat16 is monotone, so the 15 magnitude bits of ``bf16(δ)`` are a
bucket key that never puts a larger |δ| in a lower bucket. One pass builds a 32768-bucket
histogram of the keys (counts, and the energy Σ δ² per bucket); the k-th largest magnitude
lies in the bucket where the count from the top reaches k, and only that bucket's entries are
examined. The kept set is exactly TIES' (`alloy.methods.sparsify.top_magnitude_mask`): every
entry above the k-th largest magnitude and, among those equal to it, the lowest indices, with
``k = magnitude_keep_count(n, density)``. One histogram serves every density; the passes
over 2-byte keys and boolean masks run as numpy loops (several times faster than torch's on
int16 and bool), the float arithmetic and the histograms in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from alloy.methods.sparsify import magnitude_keep_count

NBUCKETS = 1 << 15
_MAGNITUDE_BITS = 0x7FFF
FIRST_NONFINITE = 0x7F80  # the key of +inf; NaNs lie above
NOTHING = NBUCKETS - 1  # the bucket of a cut that keeps nothing: no key exceeds it


def bf16_bits(delta: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
    """``δ`` rounded to bfloat16, as int16: the sign bit is δ's sign (exactly, for any δ ≠ 0),
    the other 15 bits a monotone key of |δ| (0 only for δ = 0 or |δ| < 2^-133)."""
    if out is None:
        out = np.empty(delta.shape, dtype=np.int16)
    torch.from_numpy(out).view(torch.bfloat16).copy_(delta)
    return out


def magnitude_key(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The 15 magnitude bits of `bf16_bits`: a bucket index in [0, NBUCKETS)."""
    return np.bitwise_and(bits, _MAGNITUDE_BITS, out=out)


@dataclass
class Histogram:
    """Counts and energy (Σ δ², float64) of the entries in each of the NBUCKETS buckets."""

    counts: torch.Tensor
    energy: torch.Tensor

    @classmethod
    def empty(cls) -> Histogram:
        return cls(
            torch.zeros(NBUCKETS, dtype=torch.int64), torch.zeros(NBUCKETS, dtype=torch.float64)
        )

    def add(self, key: np.ndarray, squares: torch.Tensor) -> None:
        """Add a piece: its keys and the squares of its values (float32, summed in float32
        within the piece and in float64 across pieces)."""
        k = torch.from_numpy(key.reshape(-1))
        self.counts += torch.bincount(k, minlength=NBUCKETS)
        self.energy += torch.bincount(k, weights=squares.reshape(-1), minlength=NBUCKETS)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def nonfinite(self) -> int:
        """Entries that are Inf or NaN."""
        return int(self.counts[FIRST_NONFINITE:].sum())


@dataclass(frozen=True)
class Cut:
    """The top-k entries of |δ| of one tensor at one density."""

    density: float
    k: int
    bucket: int  # the bucket holding the k-th largest magnitude (NOTHING when k = 0)
    threshold: float  # the k-th largest |δ| (0 when k = 0)
    energy: float  # Σ δ² of the k kept entries
    take: np.ndarray  # flat indices (ascending, int64) of the kept entries inside `bucket`
    take_sign: np.ndarray  # their signs (int8: -1, 0, +1)


def locate(hist: Histogram, density: float) -> tuple[int, int, int]:
    """(k, the bucket holding the k-th largest key, the number of entries in higher buckets)
    for ``k = magnitude_keep_count(n, density)``; the bucket is NOTHING when k = 0."""
    k = magnitude_keep_count(hist.total, density)
    if k == 0:
        return 0, NOTHING, 0
    from_top = torch.cumsum(hist.counts.flip(0), 0)  # entries with key >= NBUCKETS-1-i
    pos = int(torch.searchsorted(from_top, k))  # first position where the count reaches k
    above = int(from_top[pos - 1]) if pos > 0 else 0
    return k, NBUCKETS - 1 - pos, above


def make_cut(hist: Histogram, density: float, values: torch.Tensor, indices: np.ndarray) -> Cut:
    """The cut at ``density``, given the signed values δ (float32) and the flat indices
    (ascending) of the entries in the bucket `locate` names."""
    k, bucket, above = locate(hist, density)
    if k == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Cut(density, 0, NOTHING, 0.0, 0.0, empty, empty.astype(np.int8))
    r = k - above  # how many of the bucket's entries are kept: 1 <= r <= its count
    m = values.numel()
    if m < r:
        raise ValueError(f"bucket {bucket} holds {m} values, {r} are needed")
    signed = values.numpy()
    magnitude = np.abs(signed)
    # the r-th largest magnitude of the bucket; above it everything is kept, and among the
    # entries equal to it the lowest indices, as top_magnitude_mask keeps (a selection, O(m))
    threshold = float(np.partition(magnitude, m - r)[m - r])
    keep = magnitude > threshold
    missing = r - int(np.count_nonzero(keep))
    keep[np.flatnonzero(magnitude == threshold)[:missing]] = True
    kept = magnitude[keep].astype(np.float64)
    energy = float(hist.energy[bucket + 1 :].sum()) + float(np.square(kept).sum())
    return Cut(
        density,
        k,
        bucket,
        threshold,
        energy,
        np.ascontiguousarray(indices[keep], dtype=np.int64),
        np.sign(signed[keep]).astype(np.int8),
    )


def _take(c: Cut, offset: int, size: int) -> slice:
    lo, hi = np.searchsorted(c.take, [offset, offset + size])
    return slice(int(lo), int(hi))


def kept_mask(key: np.ndarray, c: Cut, offset: int = 0) -> np.ndarray:
    """Boolean mask of every kept entry (zeros included) of a piece starting at flat
    ``offset``: what `alloy.methods.sparsify.top_magnitude_mask` keeps of the whole tensor."""
    mask = key > c.bucket
    mask.reshape(-1)[c.take[_take(c, offset, key.size)] - offset] = True
    return mask


def kept_nonzero(bits: np.ndarray, c: Cut, offset: int = 0) -> np.ndarray:
    """Boolean mask of the kept nonzero entries of a piece (its `bf16_bits`) at ``offset``;
    the sign bit of ``bits`` is the sign of each of them. Kept zeros (a density above the
    share of nonzero entries) are left out: in TIES a zero never agrees with an elected sign."""
    mask = magnitude_key(bits) > c.bucket  # key >= 1: nonzero
    s = _take(c, offset, bits.size)
    mask.reshape(-1)[c.take[s][c.take_sign[s] != 0] - offset] = True
    return mask


def signed_kept(bits: np.ndarray, c: Cut, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Masks (positive, negative) of the kept nonzero entries of a piece at ``offset``."""
    kept = kept_nonzero(bits, c, offset)
    neg = kept & (bits < 0)
    return kept ^ neg, neg
