"""passthrough: copy the single input, optionally scaled."""

from __future__ import annotations

import pytest
import torch

from alloy.errors import MergeComputationError

from .helpers import assert_rel_close, merge, mergekit_merge, t


def test_copies_the_input() -> None:
    x = t(1, -2, 3)
    torch.testing.assert_close(merge("passthrough", [x], model_params=[{}]), t(1, -2, 3))


def test_scale_by_hand() -> None:
    out = merge("passthrough", [t(1, -2, 3)], model_params=[{"scale": 0.5}])
    torch.testing.assert_close(out, t(0.5, -1, 1.5))


def test_exactly_one_input() -> None:
    with pytest.raises(MergeComputationError, match="exactly one"):
        merge("passthrough", [t(1.0), t(2.0)], model_params=[{}, {}])


@pytest.mark.parity
@pytest.mark.parametrize("scale", [None, 0.25, -1.5])
def test_parity_with_mergekit(scale: float | None) -> None:
    x = torch.randn(8, 9, generator=torch.Generator().manual_seed(0))
    mps = [{"scale": scale}] if scale is not None else [{}]
    assert_rel_close(
        merge("passthrough", [x], model_params=mps),
        mergekit_merge("passthrough", [x], model_params=mps),
    )
