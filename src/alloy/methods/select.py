"""Exact top-k selection of a tensor streamed in chunks, in a few cheap passes.

TIES keeps the ``k`` entries of largest ``|δ|`` of a whole tensor; Breadcrumbs keeps a window
of magnitude ranks. Both need the k-th largest value of a tensor that the executor streams in
row chunks. A full sort costs O(n log n) and 8 bytes of indices per element; ``kthvalue`` on
the whole tensor needs it in memory at once and is single-threaded. Here instead:

1. **Sample** (one pass): every ``s``-th element by flat index (so the sample does not depend on
   how the tensor is chunked). From the sorted sample, a bracket ``[lo, hi]`` that holds the
   k-th largest value with overwhelming probability (±6 binomial standard deviations).
2. **Count** (one pass): how many values lie above ``hi``, and the values inside the bracket
   (about 2% of the tensor). If the k-th largest is among them, one small ``kthvalue`` gives
   it exactly. If not (a bad sample), the count says on which side it lies and one more pass
   collects that side: the result is always exact, only the cost varies.

The result for each rank ``k`` is a `Cut`: the threshold value ``tau``, and how many entries
equal to ``tau`` belong to the top k (``take_equal``; the lowest flat indices among them,
which is the deterministic tie-break of `alloy.methods.sparsify.top_magnitude_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alloy.errors import MergeComputationError

# Elements sampled per tensor (at least; large tensors sample one element in 256).
SAMPLE_MIN = 1 << 16
SAMPLE_EVERY = 256
# Half-width of the bracket, in binomial standard deviations of the sample rank.
BRACKET_SIGMAS = 6.0


@dataclass(frozen=True)
class Cut:
    """The top ``k`` of a tensor: every value ``> tau``, and the first ``take_equal`` (by flat
    index) of the values ``== tau``. ``equal`` counts all values equal to ``tau``."""

    k: int
    tau: float
    take_equal: int
    equal: int

    @property
    def all_equal_taken(self) -> bool:
        return self.take_equal == self.equal


@dataclass
class _Search:
    k: int
    lo: float  # the bracket, inclusive
    hi: float
    above: int = 0  # values > hi
    parts: list[torch.Tensor] | None = None  # values in [lo, hi]
    cut: Cut | None = None


class StreamingTopK:
    """Finds, for each rank in ``ks``, the `Cut` of the top-k values of a stream of chunks.

    Usage: ``sampling`` passes feed `sample`, then `count` passes until `done`::

        sel = StreamingTopK(numel, [k])
        for start, values in chunks: sel.sample(values, start)
        sel.end_sampling()
        while not sel.done:
            for start, values in chunks: sel.count(values)
            sel.end_count()
        cut = sel.cuts[0]

    ``values`` are the (non-negative, float32) magnitudes of one chunk, flattened, in flat-index
    order; chunks must cover the tensor in order in every pass.
    """

    def __init__(self, numel: int, ks: Sequence[int]) -> None:
        self.numel = numel
        self.ks = list(ks)
        self.step = max(1, min(SAMPLE_EVERY, numel // SAMPLE_MIN))
        self._samples: list[torch.Tensor] = []
        self._searches: list[_Search] = []

    # -- pass 1: sample -------------------------------------------------------------------
    def sample(self, values: torch.Tensor, start: int) -> None:
        first = (-start) % self.step
        self._samples.append(values[first :: self.step].clone())

    def end_sampling(self) -> None:
        sample = torch.sort(torch.cat(self._samples)).values if self._samples else torch.empty(0)
        self._samples = []
        m = sample.numel()
        for k in self.ks:
            if k <= 0:
                self._searches.append(_Search(k, 0.0, 0.0, cut=Cut(0, math.inf, 0, 0)))
                continue
            if k >= self.numel:
                self._searches.append(_Search(k, 0.0, 0.0, cut=Cut(k, -math.inf, 0, 0)))
                continue
            p = (self.numel - k) / self.numel  # the k-th largest's quantile from the bottom
            centre = p * (m - 1)
            half = BRACKET_SIGMAS * math.sqrt(m * p * (1 - p)) + 2
            i_lo, i_hi = math.floor(centre - half), math.ceil(centre + half)
            lo = float(sample[i_lo]) if i_lo >= 0 else -math.inf
            hi = float(sample[i_hi]) if i_hi < m else math.inf
            self._searches.append(_Search(k, lo, hi, parts=[]))

    # -- pass 2 (and rarely 3): count ----------------------------------------------------
    @property
    def cuts(self) -> list[Cut]:
        """One `Cut` per rank, in the order of ``ks`` (once `done`)."""
        return [s.cut for s in self._searches if s.cut is not None]

    @property
    def done(self) -> bool:
        return all(s.cut is not None for s in self._searches)

    def count(self, values: torch.Tensor) -> None:
        for s in self._searches:
            if s.cut is not None:
                continue
            assert s.parts is not None
            if s.hi != math.inf:
                s.above += int(torch.count_nonzero(values > s.hi))
            if s.lo == -math.inf:
                s.parts.append(values[values <= s.hi])
            elif s.hi == math.inf:
                s.parts.append(values[values >= s.lo])
            else:
                s.parts.append(values[(values >= s.lo) & (values <= s.hi)])

    def end_count(self) -> None:
        for s in self._searches:
            if s.cut is not None:
                continue
            assert s.parts is not None
            inside = torch.cat(s.parts) if s.parts else torch.empty(0)
            s.parts = []
            need = s.k - s.above  # rank of the k-th largest among the bracketed values
            if 0 < need <= inside.numel():
                tau_t = torch.kthvalue(inside, inside.numel() - need + 1).values
                greater = s.above + int(torch.count_nonzero(inside > tau_t))
                equal = int(torch.count_nonzero(inside == tau_t))
                s.cut = Cut(s.k, float(tau_t), s.k - greater, equal)
            elif s.lo == -math.inf and s.hi == math.inf or (s.lo == -math.inf and need > 0):
                raise MergeComputationError(
                    f"top-{s.k} selection over {self.numel} values found only "
                    f"{s.above + inside.numel()} comparable ones: the tensor holds NaN"
                )
            elif need <= 0:  # the k-th largest is above the bracket: search (hi, inf]
                s.lo, s.hi = _next_float32(s.hi, math.inf), math.inf
            else:  # below the bracket: search [-inf, lo)
                s.lo, s.hi = -math.inf, _next_float32(s.lo, -math.inf)
            s.above = 0  # recounted against the new bracket


def _next_float32(x: float, toward: float) -> float:
    """The float32 neighbour of ``x`` toward ``toward`` (values are float32)."""
    t = torch.tensor(x, dtype=torch.float32)
    return float(torch.nextafter(t, torch.tensor(toward, dtype=torch.float32)))


def cut_mask(values: torch.Tensor, cut: Cut, equal_seen: int) -> tuple[torch.Tensor, int]:
    """The boolean mask of ``values`` (one chunk, flat-index order) in the top k of ``cut``,
    given how many values equal to ``tau`` earlier chunks held; returns it and the new count."""
    if cut.k <= 0:
        return torch.zeros_like(values, dtype=torch.bool), equal_seen
    if cut.tau == -math.inf:
        return torch.ones_like(values, dtype=torch.bool), equal_seen
    if cut.all_equal_taken:
        return values >= cut.tau, equal_seen
    mask = values > cut.tau
    at = values == cut.tau
    n_at = int(torch.count_nonzero(at))
    if n_at:
        left = cut.take_equal - equal_seen  # equal values still to take, lowest index first
        if left >= n_at:
            mask |= at
        elif left > 0:
            idx = torch.nonzero(at.reshape(-1)).reshape(-1)[:left]
            mask.view(-1)[idx] = True
    return mask, equal_seen + n_at
