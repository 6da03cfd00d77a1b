"""Linear algebra that does not give up where LAPACK's fast driver does.

``torch.linalg.svd`` on the CPU uses LAPACK's divide-and-conquer driver (``gesdd``), which
occasionally fails to converge on float32 matrices with many repeated or near-zero singular
values. Iso-CTS meets them by construction: a task vector with the common subspace projected
out keeps only a few hundred of its 2048 directions. (Seen on the 1.1B benchmark models:
``layers.0.mlp.down_proj``, 2048 x 5632.) The same matrix in float64 converges, so `svd` retries
there and rounds the factors back.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("alloy")

# torch.linalg re-exports it from torch._C without declaring it in its stubs
LinAlgError: type[RuntimeError] = getattr(torch.linalg, "LinAlgError")  # noqa: B009


def svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.linalg.svd(a, full_matrices=False)``; when it does not converge in float32 (or
    bfloat16/float16), computed again in float64 and returned in ``a``'s dtype."""
    try:
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        return u, s, vh
    except LinAlgError:
        if a.dtype == torch.float64:
            raise
        log.debug(
            "SVD of a %s %s matrix did not converge; retrying in float64", a.dtype, tuple(a.shape)
        )
        u, s, vh = torch.linalg.svd(a.double(), full_matrices=False)
        return u.to(a.dtype), s.to(a.dtype), vh.to(a.dtype)
