"""Whether a planned merge fits in memory: `alloy recommend`'s memory verdict.

The peak estimate comes from `alloy.plan.estimate` on the plan of the recommended config
(`alloy.api.recommend` plans it, from headers only); here it meets the available RAM and GPU.
"""

from __future__ import annotations

from typing import Any

import psutil

from alloy.plan.estimate import MemoryEstimate

RAM_SHARE = 0.8  # of the available memory a merge may plan to use


def memory_fit(est: MemoryEstimate, method: str) -> dict[str, Any]:
    """Whether a merge by ``method`` with the peak estimate ``est`` fits in the available RAM
    (or on the GPU), and the device or method to use: the recommendation's ``memory``."""
    import torch

    available = psutil.virtual_memory().available
    fits = est.peak_bytes <= RAM_SHARE * available
    gib = 1024**3
    summary = (
        f"the merge needs about {est.peak_bytes / gib:.2f} GiB at its peak "
        f"({est.largest_tensor}); {available / gib:.2f} GiB are available. "
    )
    cuda = torch.cuda.is_available()
    if fits:
        device = "cuda" if cuda else "cpu"
        summary += "It fits: " + (
            "--device cuda runs the arithmetic on the GPU."
            if cuda
            else "--device cpu (the default)."
        )
    elif cuda and est.peak_bytes <= RAM_SHARE * torch.cuda.mem_get_info()[0]:
        device = "cuda"
        summary += "It does not fit in RAM but fits on the GPU: --device cuda."
    else:
        device = "cpu"
        summary += "It does not fit: close other programs or use a machine with more memory" + (
            "; dare_ties instead of ties streams large tensors in row chunks and needs less."
            if method == "ties"
            else "; task_arithmetic instead of tsv streams large tensors in row chunks and needs "
            "less (tsv holds each matrix of every model for its SVD)."
            if method == "tsv"
            else "."
        )
    return {
        "peak_bytes": est.peak_bytes,
        "available_bytes": available,
        "fits": fits,
        "device": device,
        "summary": summary,
    }
