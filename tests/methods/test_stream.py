"""Streamed merges: chunked equals whole, and the fused CPU kernels equal the torch code.

Every streamed method is computed three ways on the same inputs: its torch implementation on
the whole tensor (the reference), and row chunk by row chunk with and without the numba
kernels. TIES and Breadcrumbs on bf16 inputs have many magnitudes tied at their thresholds, so
the chunks must agree on which tied entries are kept.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from alloy.kernels import as_array, cpu
from alloy.kernels.random import GOLDEN, MASK64, draws32, mix64
from alloy.methods import get_method
from alloy.methods.stream import Chunk, TensorContext

SHAPE = (41, 13)
STREAMED: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "linear": ({}, [{"weight": 0.7}, {"weight": -0.2}, {"weight": 0.9}]),
    "slerp": ({"t": 0.3}, []),
    "task_arithmetic": ({"lambda": 0.8}, [{"weight": 0.6}, {"weight": 1.1}, {"weight": 0.4}]),
    "ties": (
        {},
        [
            {"weight": 1.0, "density": 0.4},
            {"weight": 0.5, "density": 0.7},
            {"weight": 0.8, "density": 0.2},
        ],
    ),
    "dare_ties": ({}, [{"weight": 1.0, "density": 0.4}, {"weight": 0.6, "density": 0.6}]),
    "dare_linear": (
        {"normalize": True},
        [{"weight": 1.0, "density": 0.3}, {"weight": 2.0, "density": 0.9}],
    ),
    "breadcrumbs": (
        {},
        [
            {"weight": 1.0, "density": 0.5, "gamma": 0.1},
            {"weight": 0.7, "density": 0.3, "gamma": 0.05},
        ],
    ),
    "breadcrumbs_ties": (
        {"rescale": True},
        [
            {"weight": 1.0, "density": 0.5, "gamma": 0.1},
            {"weight": 0.7, "density": 0.6, "gamma": 0.0},
        ],
    ),
}


def inputs(name: str, dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    g = torch.Generator().manual_seed(len(name))
    base = torch.randn(SHAPE, generator=g)
    no_base = get_method(name).base == "none"  # linear: the "base" is one more input
    n = 1 if name == "slerp" else len(STREAMED[name][1]) - no_base
    xs = [(base + 0.1 * torch.randn(SHAPE, generator=g)).to(dtype) for _ in range(n)]
    base = base.to(dtype)
    return ([base, *xs], None) if no_base else (xs, base)


def streamed(
    name: str,
    xs: list[torch.Tensor],
    base: torch.Tensor | None,
    *,
    rows: int,
    kernels: bool,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    spec = get_method(name)
    params, mps = STREAMED[name]
    gp = spec.params.model_validate(params)
    mp = [spec.model_params.model_validate(p) for p in mps] or [
        spec.model_params.model_validate({})
    ] * len(xs)
    ctx = TensorContext(SHAPE, 1234, torch.device("cpu"), out_dtype, kernels)
    assert spec.streamed is not None
    stream = spec.streamed(ctx, gp, mp)
    spans = [(r, min(SHAPE[0], r + rows)) for r in range(0, SHAPE[0], rows)]

    def chunks() -> list[Chunk]:
        return [
            Chunk(
                [x[a:b] for x in xs],
                None if base is None else base[a:b],
                a * SHAPE[1],
                k,
                torch.device("cpu"),
            )
            for k, (a, b) in enumerate(spans)
        ]

    while stream.next_pass():
        for c in chunks():
            stream.observe(c)
    return torch.cat([stream.apply(c).to(out_dtype).reshape(-1, SHAPE[1]) for c in chunks()])


def reference(name: str, xs: list[torch.Tensor], base: torch.Tensor | None) -> torch.Tensor:
    """The method's own function, on whole float32 tensors, with the kernels off."""
    spec = get_method(name)
    params, mps = STREAMED[name]
    gp = spec.params.model_validate(params)
    mp = [spec.model_params.model_validate(p) for p in mps] or [
        spec.model_params.model_validate({})
    ] * len(xs)
    gen = torch.Generator().manual_seed(1234)
    f32 = [x.float() for x in xs]
    return spec.fn(f32, None if base is None else base.float(), gp, mp, gen)


@pytest.fixture
def no_kernels_for_fn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOY_KERNELS", "0")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(STREAMED))
def test_chunks_with_and_without_kernels_equal_the_whole_tensor(
    name: str, dtype: torch.dtype, no_kernels_for_fn: None
) -> None:
    xs, base = inputs(name, dtype)
    whole = reference(name, xs, base)
    for kernels in (False, True):
        for rows in (3, 7, SHAPE[0]):
            out = streamed(name, xs, base, rows=rows, kernels=kernels)
            if name == "slerp":  # the angle is summed in float64 in a different order
                torch.testing.assert_close(out, whole, rtol=2e-6, atol=1e-7)
            else:
                assert torch.equal(out, whole), (kernels, rows)


@pytest.mark.parametrize("name", sorted(STREAMED))
def test_the_kernels_round_to_bfloat16_as_torch_does(name: str) -> None:
    xs, base = inputs(name, torch.bfloat16)
    out = streamed(name, xs, base, rows=5, kernels=True, out_dtype=torch.bfloat16)
    as_float = streamed(name, xs, base, rows=5, kernels=True, out_dtype=torch.float32)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, as_float.to(torch.bfloat16))


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
    )
    assert out.tolist() == [1.0 if d < threshold else 0.0 for d in expected]


def test_dare_masks_do_not_depend_on_chunking_or_other_tensors() -> None:
    xs, base = inputs("dare_ties", torch.float32)
    a = streamed("dare_ties", xs, base, rows=2, kernels=True)
    b = streamed("dare_ties", xs, base, rows=41, kernels=False)
    assert torch.equal(a, b)
