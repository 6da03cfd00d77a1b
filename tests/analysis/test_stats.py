"""Task-vector statistics against naive references: top-k cuts, energies, conflicts, cosines."""

from __future__ import annotations

import math

import pytest
import torch

from alloy.analysis import stats
from alloy.analysis.stats import Sums, task_vector_sums, weight_sums
from alloy.methods.sparsify import magnitude_keep_count, top_magnitude_mask


def _cut_naive(delta: torch.Tensor, density: float) -> tuple[torch.Tensor, float]:
    """TIES' kept mask (kthvalue-based, alloy.methods.sparsify) and its energy in float64."""
    mask = top_magnitude_mask(delta, magnitude_keep_count(delta.numel(), density))
    return mask, float((delta.double()[mask] ** 2).sum())


def _cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(3000, generator=g) * 0.01
    # bf16 checkpoints: deltas are differences of bf16 numbers, with many equal magnitudes
    base = torch.randn(3000, generator=g).bfloat16()
    ft = (base.float() + torch.randn(3000, generator=g) * 0.05).bfloat16()
    quantized = ft.float() - base.float()
    sparse = dense * (torch.rand(3000, generator=g) < 0.1)
    wide = torch.randn(3000, generator=g) * torch.logspace(-30, 10, 3000)
    return {
        "dense": dense,
        "quantized_ties": quantized,
        "sparse": sparse,
        "all_equal": torch.full((500,), -0.25),
        "wide_range": wide,
        "tiny": torch.tensor([0.5, -0.5, 0.0]),
        "one": torch.tensor([3.0]),
    }


def _naive_sums(base: torch.Tensor, fts: list[torch.Tensor], density: float) -> dict:
    deltas = [f.double() - base.double() for f in fts]
    d32 = [f.float() - base.float() for f in fts]
    kept = [_cut_naive(d, density)[0] & (d != 0) for d in d32]
    signs = [torch.sign(d) * k for d, k in zip(d32, kept)]
    count = sum(k.int() for k in kept)
    pos = torch.stack([s > 0 for s in signs]).any(0)
    neg = torch.stack([s < 0 for s in signs]).any(0)
    return {
        "sq": [float((d * d).sum()) for d in deltas],
        "dot": [float((deltas[i] * deltas[j]).sum()) for i, j in stats.pairs(len(fts))],
        "base_sq": float((base.double() ** 2).sum()),
        "changed": [float((d != 0).sum()) for d in deltas],
        "top10": [_cut_naive(d, 0.1)[1] for d in d32],
        "top50": [_cut_naive(d, 0.5)[1] for d in d32],
        "overlap": float((count >= 2).sum()),
        "conflict": float((pos & neg).sum()),
    }


@pytest.mark.parametrize("models", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [64, 1 << 20])
@pytest.mark.parametrize("density", [0.3, 0.45])  # 0.45: its bracket overlaps the top 50%'s
def test_task_vector_sums_match_a_naive_reference(
    models: int, dtype: torch.dtype, chunk: int, density: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "CHUNK", chunk)
    g = torch.Generator().manual_seed(1)
    base = torch.randn(37, 29, generator=g)
    shared = torch.randn(37, 29, generator=g) * 0.05
    fts = [
        (base + shared + torch.randn(37, 29, generator=g) * 0.03).to(dtype),
        (base - 0.5 * shared + torch.randn(37, 29, generator=g) * 0.03).to(dtype),
        (base + shared * (torch.rand(37, 29, generator=g) < 0.2)).to(dtype),
    ]
    fts = fts[3 - models :]  # with 2 models: the opposite one and the sparse one
    base = base.to(dtype)
    got = task_vector_sums(base, fts, density)
    want = _naive_sums(base, fts, density)
    for key, value in want.items():
        assert getattr(got, key) == pytest.approx(value, rel=1e-5), key
    assert got.numel == 37 * 29 and got.tensors == 1
    # the sparse fine-tune changes only where the mask is set
    assert got.changed[-1] < 0.3 * 37 * 29


@pytest.mark.parametrize("name", list(_cases()))
def test_concentration_and_changed_on_edge_cases(name: str) -> None:
    """Quantized (tied) magnitudes, sparse, constant, huge dynamic range, tiny tensors: the
    energies of the top 10% / 50% are those of TIES' kept sets."""
    delta = _cases()[name]
    base = torch.zeros_like(delta)
    s = task_vector_sums(base, [delta, -delta], 0.5)
    for i, d in enumerate((delta, -delta)):
        assert s.top10[i] == pytest.approx(_cut_naive(d, 0.1)[1], rel=1e-6, abs=1e-300)
        assert s.top50[i] == pytest.approx(_cut_naive(d, 0.5)[1], rel=1e-6, abs=1e-300)
        assert s.changed[i] == float((d != 0).sum())
    kept = _cut_naive(delta, 0.5)[0] & (delta != 0)
    assert s.overlap == s.conflict == float(kept.sum())  # δ and −δ: every overlap conflicts


def test_known_values_by_hand() -> None:
    base = torch.zeros(4)
    a = torch.tensor([1.0, -2.0, 0.0, 3.0])
    b = torch.tensor([1.0, 2.0, 0.5, -3.0])
    s = task_vector_sums(base, [a, b], 0.5)  # keeps |3| and |-2| of a; |±3| and |2| of b
    assert s.sq == [14.0, 14.25] and s.dot == [1.0 - 4.0 - 9.0]
    assert s.changed == [3.0, 4.0]
    assert s.top50 == [13.0, 13.0] and s.top10 == [9.0, 9.0]  # k = max(1, int(0.4)) = 1
    assert (s.overlap, s.conflict) == (2.0, 2.0)  # entries 1 and 3: both kept, signs differ
    m = s.metrics(has_base=True)
    assert m["cosine"][0] == pytest.approx(-12 / math.sqrt(14 * 14.25))
    assert m["conflict"] == 1.0 and m["changed"] == [0.75, 1.0]
    assert m["top50_energy"][0] == pytest.approx(13 / 14)


def test_weight_sums_and_aggregation() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    s = weight_sums([a, b])
    m = s.metrics(has_base=False)
    assert m["cosine"][0] == pytest.approx(1 / math.sqrt(2))
    assert m["angle_deg"][0] == pytest.approx(45.0)
    total = Sums(2)
    total.add(s)
    total.add(weight_sums([torch.tensor([0.0, 3.0]), torch.tensor([0.0, -3.0])]))
    # the cosine of the concatenated vectors [1,0,0,3] and [1,1,0,-3]
    assert total.metrics(has_base=False)["cosine"][0] == pytest.approx(-8 / math.sqrt(10 * 11))
    assert total.tensors == 2 and total.scaled(2.0).sq == [20.0, 22.0]


@pytest.mark.parametrize("numel", [1000, 1 << 16], ids=["torch", "kernel"])
def test_weight_sums_on_either_side_of_the_kernel_threshold(numel: int) -> None:
    from alloy.kernels import KERNEL_MIN

    assert (numel >= KERNEL_MIN) == (numel == 1 << 16)
    g = torch.Generator().manual_seed(numel)
    xs = [torch.randn(numel, generator=g).to(torch.bfloat16) for _ in range(3)]
    s = weight_sums(xs)
    d = [x.double() for x in xs]
    assert s.sq == pytest.approx([float((x * x).sum()) for x in d], rel=1e-12)
    assert s.dot == pytest.approx(
        [float((d[i] * d[j]).sum()) for i, j in ((0, 1), (0, 2), (1, 2))], rel=1e-9, abs=1e-9
    )
