"""Compute kernels: counter-based random draws (`random`), fused CPU loops (`fused`, numba: the
merge kernels and the analysis kernels) and an SVD that falls back to float64 where LAPACK
does not converge (`linalg`).

The fused kernels are a fast path for CPU merges (through the accelerators,
`alloy.methods.streamed`); every method's definition is its torch function, which runs on any
device and is the reference the kernels are tested against. Set
``ALLOY_KERNELS=0`` to use the torch implementations on the CPU too.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch


def cpu_kernels_enabled() -> bool:
    """Whether CPU merges use the numba kernels (numba installed, not disabled). Only looks
    numba up: it is imported, and each kernel compiled (or loaded from numba's cache), on the
    first use of a kernel, so a merge that runs none never pays for importing numba."""
    if os.environ.get("ALLOY_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("numba") is not None


# Tensors smaller than this go through torch even where the kernels are on: numba's import and
# the loading of each cached kernel (about 0.2 s apiece) cost a tiny merge more than the
# kernels save on its tensors (examples/linear.yml: 2.8 s with them).
KERNEL_MIN = 1 << 16


def kernels_for(numel: int, enabled: bool) -> bool:
    """Whether a tensor of ``numel`` elements runs the CPU kernels (``enabled``: the run's
    `cpu_kernels_enabled`)."""
    return enabled and numel >= KERNEL_MIN


def as_array(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a flat contiguous numpy array for the kernels (bfloat16 as uint16 bits)."""
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(np.uint16)
    return flat.numpy()
