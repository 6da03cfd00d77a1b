"""The merge kernels on their own: bfloat16 rounding, the finiteness count, SplitMix64 draws.

(That the kernels compute what the methods compute is tested through the accelerators,
``tests/methods/streamed/test_accelerators.py``.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alloy.kernels import as_array
from alloy.kernels.fused import merge as cpu
from alloy.kernels.random import GOLDEN, MASK64, draws32, mix64


def test_bfloat16_rounding_of_special_values() -> None:
    values = torch.tensor(
        [1.0, -2.5, 1 + 2**-8, 1 + 3 * 2**-8, 3.0e38, -math.inf, math.inf, 1e-40, -0.0, math.nan]
    )
    out = torch.empty(len(values), dtype=torch.bfloat16)
    cpu.linear_apply((as_array(values),), np.array([1.0], np.float32), np.float32(1), as_array(out))
    expected = values.to(torch.bfloat16)
    assert torch.equal(out[:-1], expected[:-1])  # ties to even, overflow to inf, subnormals
    assert torch.isnan(out[-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_count_nonfinite(dtype: torch.dtype) -> None:
    x = torch.linspace(-3, 3, 1000).to(dtype)
    assert cpu.count_nonfinite(as_array(x)) == 0
    x[3], x[500], x[999] = math.nan, math.inf, -math.inf
    assert cpu.count_nonfinite(as_array(x)) == 3


def test_random_draws_are_splitmix64_in_every_implementation() -> None:
    key = 0xDEADBEEF12345678
    expected = [mix64((key + (j + 1) * GOLDEN) & MASK64) >> 32 for j in range(100, 140)]
    assert draws32(key, 100, 40).tolist() == expected
    # the kernel's draws, seen through DARE's keep decisions: density p keeps j iff draw < p·2^32
    ones = torch.ones(40)
    out = torch.empty(40)
    threshold = 1 << 31
    cpu.gta_apply(
        (as_array(ones),),
        as_array(torch.zeros(40)),
        100,
        cpu.MODE_DARE,
        np.ones(1, np.float32),
        np.ones(1, np.float32),
        np.zeros(1, np.float32),
        np.zeros(1, np.int64),
        np.zeros(1, np.float32),
        np.zeros(1, np.int64),
        np.array([key], np.uint64),
        np.array([threshold], np.uint64),
        False,
        False,
        np.float32(1),
        np.float32(1),
        as_array(out),
        np.zeros(0, np.float64),
    )
    assert out.tolist() == [1.0 if d < threshold else 0.0 for d in expected]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gta_apply_measures_the_distance_sums_of_what_it_writes(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(5)
    m = 3 * 2048 + 77  # blocks and a partial one
    base = torch.randn(m, generator=g).to(dtype)
    xs = [(base.float() + 0.1 * torch.randn(m, generator=g)).to(dtype) for _ in range(2)]
    out = torch.empty(m, dtype=dtype)
    dist = np.zeros(4, np.float64)
    cpu.gta_apply(
        tuple(as_array(x) for x in xs),
        as_array(base),
        0,
        cpu.MODE_NONE,
        np.ones(2, np.float32),
        np.ones(2, np.float32),
        np.full(2, -np.inf, np.float32),
        np.full(2, -1, np.int64),
        np.full(2, np.inf, np.float32),
        np.full(2, -1, np.int64),
        np.zeros(2, np.uint64),
        np.full(2, 1 << 32, np.uint64),
        True,
        True,
        np.float32(2),
        np.float32(1),
        as_array(out),
        dist,
    )
    b = base.double()
    want = [
        *(float((x.double() - b).pow(2).sum()) for x in xs),
        float((out.double() - b).pow(2).sum()),  # the stored (rounded) values
        float(b.pow(2).sum()),
    ]
    # bfloat16 differences are exact in float32; float32 ones round once (as the distance
    # kernel's and the report's precision allow)
    assert dist.tolist() == pytest.approx(want, rel=1e-12 if dtype == torch.bfloat16 else 1e-8)
    assert float((out.double() - b).pow(2).sum()) > 0
