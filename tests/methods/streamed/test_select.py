"""Streaming exact top-k: against a naive stable sort, over chunkings, ties and bad samples."""

from __future__ import annotations

import math

import pytest
import torch

from alloy.errors import MergeComputationError
from alloy.methods.streamed import select
from alloy.methods.streamed.select import StreamingTopK


def naive_top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k largest values, equal values ranked by lowest flat index (stable sort)."""
    flat = values.reshape(-1).tolist()
    order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))
    mask = torch.zeros(len(flat), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def streamed_masks(values: torch.Tensor, ks: list[int], chunk: int) -> tuple[list, int]:
    flat = values.reshape(-1)
    spans = [(s, flat[s : s + chunk]) for s in range(0, flat.numel(), chunk)]
    sel = StreamingTopK(flat.numel(), ks)
    for start, v in spans:
        sel.add_sample(v[sel.sample_slice(start)])
    sel.end_sampling()
    passes = 0
    while not sel.done:
        for start, v in spans:
            sel.count(v, start)
        sel.end_count()
        passes += 1
    masks = [torch.cat([cut.mask(v, start) for start, v in spans]) for cut in sel.cuts]
    for cut, mask in zip(sel.cuts, masks):
        if passes:  # the sums the rescaling uses
            assert cut.kept_sum == pytest.approx(float(flat[mask].double().sum()), rel=1e-9)
            assert cut.total_sum == pytest.approx(float(flat.double().sum()), rel=1e-9)
    return masks, passes


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 0.5, 0.99, 1.0])
def test_matches_stable_sort_on_continuous_values(chunk: int, density: float) -> None:
    g = torch.Generator().manual_seed(1)
    values = torch.randn(5003, generator=g).abs()
    k = int(density * values.numel())
    (mask,), passes = streamed_masks(values, [k], chunk)
    assert torch.equal(mask, naive_top_k(values, k))
    assert int(mask.sum()) == k
    assert passes <= 1


@pytest.mark.parametrize("chunk", [13, 512, 100_000])
def test_ties_at_the_threshold_keep_the_lowest_indices(chunk: int) -> None:
    # few distinct values (like task vectors of bf16 checkpoints): many ties at any threshold
    g = torch.Generator().manual_seed(2)
    values = torch.randint(0, 6, (4001,), generator=g).float() / 8
    for k in (1, 17, 1000, 2000, 3999):
        (mask,), _ = streamed_masks(values, [k], chunk)
        assert torch.equal(mask, naive_top_k(values, k)), k


def test_several_ranks_at_once_give_nested_windows() -> None:
    g = torch.Generator().manual_seed(3)
    values = (torch.randn(20000, generator=g) * 4).round().abs()
    (top50, top500, top9000), _ = streamed_masks(values, [50, 500, 9000], 999)
    for mask, k in ((top50, 50), (top500, 500), (top9000, 9000)):
        assert torch.equal(mask, naive_top_k(values, k))
    assert bool((top50 <= top500).all()) and bool((top500 <= top9000).all())


def test_a_misleading_sample_costs_a_pass_not_exactness(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sampled positions (every 4th) hold small values, the others large ones: the bracket
    # from the sample misses the true threshold, and a further count pass must recover it.
    monkeypatch.setattr(select, "SAMPLE_MIN", 4)
    monkeypatch.setattr(select, "SAMPLE_EVERY", 4)
    n = 4000
    values = torch.arange(n, dtype=torch.float32) + 1000.0
    values[::4] = torch.arange(n // 4, dtype=torch.float32) / 1000
    for k in (10, 1500, 2990, 3500):
        (mask,), passes = streamed_masks(values, [k], 333)
        assert torch.equal(mask, naive_top_k(values, k)), k
        assert passes >= 1
    # the below-the-bracket side: sampled positions large, the rest tiny
    values = torch.arange(n, dtype=torch.float32) / 1000
    values[::4] = 5000.0 + torch.arange(n // 4, dtype=torch.float32)
    (mask,), passes = streamed_masks(values, [3000], 333)
    assert torch.equal(mask, naive_top_k(values, 3000))
    assert passes == 2


def test_trivial_ranks_and_empty_tensor() -> None:
    values = torch.rand(100)
    (none, all_), passes = streamed_masks(values, [0, 100], 30)
    assert not none.any() and all_.all() and passes == 0
    sel = StreamingTopK(0, [0])
    sel.end_sampling()
    assert sel.done and sel.cuts[0].k == 0


def test_nan_is_named() -> None:
    values = torch.rand(1000)
    values[::2] = math.nan
    with pytest.raises(MergeComputationError, match="NaN"):
        streamed_masks(values, [700], 100)
