"""The accelerators equal the methods: chunked equals whole, with and without the kernels.

Every method with an accelerator is computed three ways on the same inputs: its function on
the whole tensor (the definition, pure torch), and its accelerator row chunk by row chunk with
and without the numba kernels. TIES and Breadcrumbs on bf16 inputs have many magnitudes tied
at their thresholds, so the chunks must agree on which tied entries are kept; DARE's draws are
keyed by the same (tensor, input) streams in both paths.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from alloy.methods import all_methods, get_method
from alloy.methods.streamed.stream import Chunk, TensorContext

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
    assert spec.accelerator is not None
    stream = spec.accelerator(ctx, gp, mp)
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
    """The method's own function, on whole float32 tensors."""
    spec = get_method(name)
    params, mps = STREAMED[name]
    gp = spec.params.model_validate(params)
    mp = [spec.model_params.model_validate(p) for p in mps] or [
        spec.model_params.model_validate({})
    ] * len(xs)
    gen = torch.Generator().manual_seed(1234)
    f32 = [x.float() for x in xs]
    return spec.fn(f32, None if base is None else base.float(), gp, mp, gen)


def test_every_accelerator_is_tested() -> None:
    assert {s.name for s in all_methods() if s.accelerator is not None} == set(STREAMED)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(STREAMED))
def test_chunks_with_and_without_kernels_equal_the_whole_tensor(
    name: str, dtype: torch.dtype
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


def test_dare_masks_do_not_depend_on_chunking_or_other_tensors() -> None:
    xs, base = inputs("dare_ties", torch.float32)
    a = streamed("dare_ties", xs, base, rows=2, kernels=True)
    b = streamed("dare_ties", xs, base, rows=41, kernels=False)
    assert torch.equal(a, b)
