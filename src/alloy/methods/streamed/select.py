"""Exact top-k selection of a tensor streamed in chunks, in a few cheap passes.

TIES keeps the ``k`` entries of largest ``|δ|`` of a whole tensor; Breadcrumbs keeps a window
of magnitude ranks. Both need the k-th largest value of a tensor that the executor streams in
row chunks. A full sort costs O(n log n) and 8 bytes of indices per element; ``kthvalue`` on
the whole tensor needs it in memory at once and is single-threaded. Here instead:

1. **Sample** (one pass): every ``step``-th element by flat index (so the sample does not depend
   on how the tensor is chunked). From the sorted sample, a bracket ``[lo, hi]`` that holds the
   k-th largest value with overwhelming probability (±`BRACKET_SIGMAS` = 5 binomial standard
   deviations of the sample rank).
2. **Count** (one pass): how many values lie above ``hi``, and the values inside the bracket
   with their flat indices (about 2% of the tensor). If the k-th largest is among them, one
   small ``kthvalue`` gives it exactly. If not (a misleading sample), the count says on which
   side it lies and one more pass collects that side: the result is always exact, only the
   cost varies.

The result for each rank ``k`` is a `Cut`: the threshold ``tau`` and the flat index ``cutoff``
of the last value equal to ``tau`` that belongs to the top k. An element is in the top k iff
its value is ``> tau``, or ``== tau`` at a flat index ``<= cutoff``: among equal values the
lowest indices win, which makes the selection deterministic and lets every chunk decide its
elements on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from alloy.errors import MergeComputationError

# Elements sampled per tensor (at least; tensors of SAMPLE_MIN·SAMPLE_EVERY elements or more
# sample one element in SAMPLE_EVERY).
SAMPLE_MIN = 1 << 16
SAMPLE_EVERY = 64
# Half-width of the bracket, in binomial standard deviations of the sample rank.
BRACKET_SIGMAS = 5.0


@dataclass(frozen=True)
class Cut:
    """The top ``k``: values ``> tau``, and values ``== tau`` at flat indices ``<= cutoff``.
    ``kept_sum`` is the sum of the values kept, ``kept_sq`` the sum of their squares (when the
    counts included them), ``total_sum`` the sum of all values."""

    k: int
    tau: float
    cutoff: int
    kept_sum: float = 0.0
    total_sum: float = 0.0
    kept_sq: float = 0.0

    def mask(self, values: torch.Tensor, start: int) -> torch.Tensor:
        """Which of ``values`` (one chunk, flat-index order from ``start``) are in the top k."""
        if self.k <= 0:
            return torch.zeros_like(values, dtype=torch.bool)
        if self.tau == -math.inf:
            return torch.ones_like(values, dtype=torch.bool)
        keep = values > self.tau
        last = self.cutoff - start  # position in this chunk of the last equal value kept
        if last >= 0:
            equal = values.reshape(-1)[: last + 1] == self.tau
            keep.view(-1)[: last + 1] |= equal
        return keep


@dataclass
class _Search:
    k: int
    lo: float  # the bracket, inclusive (sample ranks until the sample is sorted)
    hi: float
    above: int = 0  # values > hi
    above_sum: float = 0.0
    above_sq: float = 0.0
    values: list[np.ndarray] = field(default_factory=list)  # values in [lo, hi]
    indices: list[np.ndarray] = field(default_factory=list)  # and their flat indices
    cut: Cut | None = None


class StreamingTopK:
    """Finds, for each rank in ``ks``, the `Cut` of the top-k values of a stream of chunks.

    One sampling pass, then count passes until `done`::

        sel = StreamingTopK(numel, [k])
        for start, values in chunks: sel.add_sample(values.view(-1)[sel.sample_slice(start)])
        sel.end_sampling()
        while not sel.done:
            for start, values in chunks: sel.count(values, start)
            sel.end_count()
        cut = sel.cuts[0]

    ``values`` are non-negative float32 magnitudes; chunks cover the tensor in flat-index
    order in every pass. `add_counts` takes the same counts computed elsewhere (the CPU kernel).
    """

    def __init__(self, numel: int, ks: Sequence[int]) -> None:
        self.numel = numel
        self.ks = list(ks)
        self.step = max(1, min(SAMPLE_EVERY, numel // SAMPLE_MIN))
        self.total_sum = 0.0
        self._total_known = False  # the first count pass has summed every value
        self._samples: list[torch.Tensor] = []
        self._searches: list[_Search] = []

    # -- pass 1: sample ---------------------------------------------------------------------
    def sample_slice(self, start: int) -> slice:
        """The positions of a chunk starting at flat index ``start`` that belong to the sample."""
        return slice((-start) % self.step, None, self.step)

    def add_sample(self, values: torch.Tensor | np.ndarray) -> None:
        self._samples.append(_numpy(values).copy())

    def end_sampling(self) -> None:
        sample = np.concatenate(self._samples) if self._samples else np.empty(0, np.float32)
        self._samples = []
        m = sample.size
        ranks = []
        for k in self.ks:
            if k <= 0:
                self._searches.append(_Search(k, 0.0, 0.0, cut=Cut(0, math.inf, -1)))
                continue
            if k >= self.numel:
                self._searches.append(_Search(k, 0.0, 0.0, cut=Cut(k, -math.inf, -1)))
                continue
            p = (self.numel - k) / self.numel  # the k-th largest's quantile from the bottom
            centre = p * (m - 1)
            half = BRACKET_SIGMAS * math.sqrt(m * p * (1 - p)) + 2
            i_lo, i_hi = math.floor(centre - half), math.ceil(centre + half)
            ranks += [r for r in (i_lo, i_hi) if 0 <= r < m]
            self._searches.append(_Search(k, i_lo, i_hi))
        if ranks:  # the sample's order statistics at the bracket ends, without a full sort
            sample = np.partition(sample, sorted(set(ranks)))
        for s in self._searches:
            if s.cut is None:
                i_lo, i_hi = int(s.lo), int(s.hi)
                s.lo = float(sample[i_lo]) if 0 <= i_lo < m else -math.inf
                s.hi = float(sample[i_hi]) if 0 <= i_hi < m else math.inf

    # -- pass 2 (and rarely 3): count --------------------------------------------------------
    @property
    def done(self) -> bool:
        return all(s.cut is not None for s in self._searches)

    @property
    def cuts(self) -> list[Cut]:
        """One `Cut` per rank, in the order of ``ks`` (once `done`)."""
        return [s.cut for s in self._searches if s.cut is not None]

    def cuts_so_far(self) -> list[tuple[int, Cut]]:
        """(search number, cut) of the ranks already found."""
        return [(i, s.cut) for i, s in enumerate(self._searches) if s.cut is not None]

    def open_brackets(self) -> list[tuple[int, float, float]]:
        """(search number, lo, hi) of the ranks still to find in this count pass."""
        return [(i, s.lo, s.hi) for i, s in enumerate(self._searches) if s.cut is None]

    def count(self, values: torch.Tensor, start: int) -> None:
        flat = values.reshape(-1)
        first = True
        for i, lo, hi in self.open_brackets():
            above = flat > hi
            where = torch.nonzero((flat >= lo) & ~above).reshape(-1)
            self.add_counts(
                i,
                int(above.sum()),
                float(flat[above].double().sum()),
                float(flat.double().sum()) if first else None,
                flat[where],
                where + start,
            )
            first = False

    def add_counts(
        self,
        search: int,
        above: int,
        above_sum: float,
        total: float | None,
        values: torch.Tensor | np.ndarray,
        indices: torch.Tensor | np.ndarray,
        above_sq: float = 0.0,
    ) -> None:
        """Counts of one chunk for one open bracket: values above it and their sum, the sum of
        all the chunk's values (pass it for one bracket only), the values inside and their flat
        indices, and optionally the sum of squares of the values above."""
        s = self._searches[search]
        s.above += above
        s.above_sum += above_sum
        s.above_sq += above_sq
        if total is not None and not self._total_known:
            self.total_sum += total
        s.values.append(_numpy(values).astype(np.float32, copy=False))
        s.indices.append(_numpy(indices).astype(np.int64, copy=False))

    def end_count(self) -> None:
        self._total_known = True
        for s in self._searches:
            if s.cut is not None:
                continue
            inside = np.concatenate(s.values) if s.values else np.empty(0, np.float32)
            where = np.concatenate(s.indices) if s.indices else np.empty(0, np.int64)
            s.values, s.indices = [], []
            need = s.k - s.above  # rank of the k-th largest among the bracketed values
            if 0 < need <= inside.size:
                pos = inside.size - need  # 0-based rank from the bottom
                tau = inside[np.argpartition(inside, pos)[pos]]
                greater = inside > tau
                take = need - int(greater.sum())  # equal values kept, lowest index first
                at = where[inside == tau]  # ascending: chunks and positions come in order
                cutoff = int(at[take - 1]) if take > 0 else -1
                wide = inside[greater].astype(np.float64)
                kept = s.above_sum + float(wide.sum()) + take * float(tau)
                kept_sq = s.above_sq + float((wide * wide).sum()) + take * float(tau) ** 2
                s.cut = Cut(s.k, float(tau), cutoff, kept, 0.0, kept_sq)
            elif s.lo == -math.inf and need > 0:
                raise MergeComputationError(
                    f"top-{s.k} selection over {self.numel} values found only "
                    f"{s.above + inside.size} comparable ones: the tensor holds NaN"
                )
            elif need <= 0:  # the k-th largest is above the bracket: search (hi, inf]
                s.lo, s.hi = _next_float32(s.hi, math.inf), math.inf
            else:  # below the bracket: search [-inf, lo)
                s.lo, s.hi = -math.inf, _next_float32(s.lo, -math.inf)
            s.above, s.above_sum, s.above_sq = 0, 0.0, 0.0  # recounted against the new bracket
        if self.done:
            total = self.total_sum
            for s in self._searches:
                assert s.cut is not None
                s.cut = Cut(s.cut.k, s.cut.tau, s.cut.cutoff, s.cut.kept_sum, total, s.cut.kept_sq)


Bracket = tuple[int, float, float]  # (search number, lo, hi): an open bracket


def bracket_groups(open_: Sequence[Bracket]) -> tuple[np.ndarray, np.ndarray, list[list[Bracket]]]:
    """The brackets merged where they overlap: (group lows, group highs, each group's
    brackets), groups in ascending order, for the kernels' count passes."""
    order = sorted(range(len(open_)), key=lambda k: open_[k][1])  # stable: by lo
    glo: list[float] = []
    ghi: list[float] = []
    members: list[list[Bracket]] = []
    for k in order:
        _, lo, hi = open_[k]
        if glo and lo <= ghi[-1]:
            ghi[-1] = max(ghi[-1], hi)
            members[-1].append(open_[k])
        else:
            glo.append(lo)
            ghi.append(hi)
            members.append([open_[k]])
    return np.array(glo, np.float32), np.array(ghi, np.float32), members


def add_group_counts(
    sel: StreamingTopK,
    groups: Sequence[Sequence[Bracket]],
    where: np.ndarray,
    wmag: np.ndarray,
    found: np.ndarray,
    offset: int = 0,
) -> None:
    """Hand ``sel`` the values a kernel collected per group of brackets: ``groups[g]`` (from
    `bracket_groups`), ``where[g, :found[g]]`` their positions (plus ``offset``: their flat
    indices) and ``wmag[g, :found[g]]`` their values. A group of one bracket is that bracket's
    values; a merged group is split by each bracket's bounds."""
    for g, members in enumerate(groups):
        idx = where[g, : found[g]].astype(np.int64) + offset
        mag = wmag[g, : found[g]].copy()  # the kernel's buffers are reused
        if len(members) == 1:
            sel.add_counts(members[0][0], 0, 0.0, None, mag, idx)
            continue
        for search, lo, hi in members:
            mine = (mag >= lo) & (mag <= hi)
            sel.add_counts(search, 0, 0.0, None, mag[mine], idx[mine])


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.reshape(-1)
    return (
        values.detach()
        .reshape(-1)
        .to("cpu", torch.float32 if values.is_floating_point() else torch.int64)
        .numpy()
    )


def _next_float32(x: float, toward: float) -> float:
    """The float32 neighbour of ``x`` toward ``toward`` (values are float32)."""
    t = torch.tensor(x, dtype=torch.float32)
    return float(torch.nextafter(t, torch.tensor(toward, dtype=torch.float32)))
