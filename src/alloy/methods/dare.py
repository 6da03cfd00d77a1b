"""DARE (Yu et al. 2023, arXiv 2311.03099): drop task-vector entries at random, rescale.

    δ̂_i = m_i ⊙ δ_i / p_i,   m_i[j] = [draw_i(j) < p_i·2^32],   p_i = density_i

then ``dare_ties`` elects signs and sums the agreeing entries as TIES does, ``dare_linear``
sums them all (`alloy.methods.task_arithmetic` has the table). The draws are SplitMix64 keyed
by (seed, tensor, input) at each element's flat index (`alloy.kernels.random`), so the
streamed accelerator, which draws chunk by chunk, keeps the same entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloy.kernels.random import draws32, keep_threshold
from alloy.methods.registry import method
from alloy.methods.streamed.task_vectors import family_accelerator
from alloy.methods.task_arithmetic import DareLinearParams, DareTiesParams, TaskModelParams
from alloy.methods.task_vectors import combine, input_key, task_vectors, tensor_key

DARE_PAPER = "Yu et al. 2023, Language Models are Super Mario (DARE, arXiv 2311.03099)"


def dare_drop(delta: torch.Tensor, density: float, key: int, start: int, rescale: bool) -> float:
    """DARE's drop, in place: ``δ`` keeps the entries whose draw (stream ``key``, flat indices
    from ``start``) is below ``density·2^32``. Returns the rescale factor ``1/density`` (1
    without ``rescale``, at density 0, or at density >= 1, which keeps everything)."""
    # Deliberate: drawn from a stream keyed by (seed, tensor, input), not the global RNG as
    # mergekit does; the unbiased 1/p rescale, not mergekit's L1 matching.
    if density >= 1:
        return 1.0
    draws = draws32(key, start, delta.numel(), delta.device)
    delta.mul_((draws < keep_threshold(density)).view(delta.shape))
    return 1.0 / density if rescale and density > 0 else 1.0


def _dare(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DareTiesParams | DareLinearParams,
    model_params: Sequence[TaskModelParams],
    generator: torch.Generator | None,
    *,
    elect: bool,
    method: str,
) -> torch.Tensor:
    base, deltas = task_vectors(inputs, base, model_params, method)  # δ_i
    root = tensor_key(generator)
    scales = [
        dare_drop(d, p.density, input_key(root, i), 0, params.rescale)  # δ̂_i
        for i, (d, p) in enumerate(zip(deltas, model_params))
    ]
    weights = [p.weight for p in model_params]
    return combine(base, deltas, scales, weights, params, elect=elect)


@method(
    "dare_ties",
    params=DareTiesParams,
    model_params=TaskModelParams,
    base="required",
    paper=f"{DARE_PAPER}, with TIES sign election (arXiv 2306.01708)",
    summary="Randomly drop task-vector entries (keep with probability density, rescale by "
    "1/density), elect signs, sum the agreeing entries.",
    feeding="rows",
    randomized=True,
    accelerator=family_accelerator("dare", elect=True, method="dare_ties"),
    overhead=3.0,
)
def dare_ties(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DareTiesParams,
    model_params: Sequence[TaskModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Drop and rescale, elect, disjoint sum."""
    return _dare(inputs, base, params, model_params, generator, elect=True, method="dare_ties")


@method(
    "dare_linear",
    params=DareLinearParams,
    model_params=TaskModelParams,
    base="required",
    paper=DARE_PAPER,
    summary="Randomly drop task-vector entries (keep with probability density, rescale by "
    "1/density), then add the weighted sum to the base.",
    feeding="rows",
    randomized=True,
    accelerator=family_accelerator("dare", elect=False, method="dare_linear"),
    overhead=2.0,
)
def dare_linear(
    inputs: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DareLinearParams,
    model_params: Sequence[TaskModelParams],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Drop and rescale, weighted sum."""
    return _dare(inputs, base, params, model_params, generator, elect=False, method="dare_linear")
