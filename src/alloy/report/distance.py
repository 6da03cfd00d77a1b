"""The merged model's distance from the base, measured while the merge is written.

The relative L2 distance of a model ``W`` from the base ``B``, over a set of tensors (a layer,
or the whole model), is ``sqrt(Σ ‖W − B‖²) / sqrt(Σ ‖B‖²)``: for a source it is the relative
norm of its task vector (`alloy analyze`'s ``|δ|/|W|``). `DistanceObserver` is handed every
merged chunk by the executor (`alloy.plan.executor.Executor`'s ``on_merged``), with the chunk's
inputs and base already in memory, so no file is read again: it measures the merged rows as
they are stored (cast to the output dtype, whose rounding is part of the distance) and the
sources' rows against the base, exactly, in one pass (`alloy.kernels.fused.distance` on the
CPU, torch elsewhere). Tensors without a base (a method that takes none, a tensor the base
lacks) and tensors whose shape differs from the base's are not measured.

The warning: a merge whose overall distance exceeds 1.5 · sqrt(n / 2) times the farthest of
its n sources' (`alloy.analysis.distance.warn_threshold` says why).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from alloy.analysis.distance import relative, warn_threshold
from alloy.arch.infer import split_layer_name
from alloy.kernels import as_array, kernels_for
from alloy.methods.streamed.stream import Chunk, kernel_dtypes

if TYPE_CHECKING:
    from alloy.plan.planner import TensorJob


def layer_label(name: str) -> str:
    """The layer of a tensor name (its index in the layer stack), or ``other``."""
    split = split_layer_name(name)
    return str(split[1]) if split is not None else "other"


def _sq(x: torch.Tensor, base: torch.Tensor) -> float:
    d = x.to(base.device, torch.float32).reshape(-1) - base.reshape(-1)
    return float(torch.sum(d.double() ** 2))


class DistanceObserver:
    """Accumulates Σ (merged − base)², Σ (source − base)² and Σ base² per layer, from the
    executor's merged chunks (called on the merging thread, in order)."""

    def __init__(self, kernels: bool = True) -> None:
        self.kernels = kernels
        self.merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # layer: sq, base
        self.sources: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.models: dict[str, None] = {}  # the sources, in order of appearance
        self.measured: set[str] = set()
        self.skipped: set[str] = set()

    def __call__(self, job: TensorJob, chunk: Chunk, merged: torch.Tensor) -> None:
        if job.base is None or chunk.raw_base is None:
            return
        base = chunk.raw_base
        if merged.numel() != base.numel() or any(
            x.numel() != base.numel() for x in chunk.raw_inputs
        ):
            self.skipped.add(job.name)
            return
        stored = merged if merged.dtype == job.info.dtype else merged.to(dtype=job.info.dtype)
        total, per, base_sq = self._sums(chunk, stored)
        layer = layer_label(job.name)
        acc = self.merged[layer]
        acc[0] += total
        acc[1] += base_sq
        for ref, sq in zip(job.inputs, per):
            key = str(ref.model)
            self.models.setdefault(key)
            src = self.sources[(key, layer)]
            src[0] += sq
            src[1] += base_sq
        self.measured.add(job.name)

    def _sums(self, chunk: Chunk, stored: torch.Tensor) -> tuple[float, list[float], float]:
        if chunk.distance is not None:  # measured by the kernel that merged the chunk
            return chunk.distance
        raw, base = chunk.raw_inputs, chunk.raw_base
        assert base is not None
        if (
            kernels_for(stored.numel(), self.kernels)
            and stored.device.type == "cpu"
            and raw
            and kernel_dtypes([*raw, base])
            and kernel_dtypes([stored])
        ):
            from alloy.kernels.fused.distance import distance_sums

            total, per, base_sq = distance_sums(
                as_array(stored), tuple(as_array(x) for x in raw), as_array(base)
            )
            return float(total), [float(v) for v in per], float(base_sq)
        b = chunk.base
        assert b is not None
        return _sq(stored, b), [_sq(x, b) for x in chunk.inputs], float(torch.sum(b.double() ** 2))

    def result(self, base: str | None) -> dict[str, Any] | None:
        """The distances (report.json's ``distance``), or None when nothing was measured."""
        if not self.measured:
            return None
        layers = sorted(self.merged, key=lambda s: (s == "other", int(s) if s.isdigit() else 0))
        merged = _distances({lay: self.merged[lay] for lay in layers})
        sources = []
        for m in self.models:
            per = {lay: self.sources[(m, lay)] for lay in layers if (m, lay) in self.sources}
            sources.append({"model": m, **_distances(per)})
        return summarize(base, len(self.measured), merged, sources, sorted(self.skipped))


def _distances(per_layer: dict[str, list[float]]) -> dict[str, Any]:
    """{"overall": d, "layers": {layer: d}} from (Σ diff², Σ base²) per layer."""
    sq = sum(v[0] for v in per_layer.values())
    base_sq = sum(v[1] for v in per_layer.values())
    return {
        "overall": relative(sq, base_sq),
        "layers": {lay: relative(v[0], v[1]) for lay, v in per_layer.items()},
    }


def summarize(
    base: str | None,
    tensors: int,
    merged: dict[str, Any],
    sources: list[dict[str, Any]],
    skipped: list[str] | None = None,
) -> dict[str, Any]:
    """The distance record: the merged model's and each source's distances, the farthest
    source, their ratio, the threshold and the warning (None when within it)."""
    far = [s["overall"] for s in sources if s["overall"] is not None]
    farthest = max(far) if far else None
    d = merged["overall"]
    ratio = d / farthest if d is not None and farthest else None
    threshold = warn_threshold(len(sources))
    out: dict[str, Any] = {
        "base": base,
        "tensors": tensors,
        "merged": merged,
        "sources": sources,
        "farthest_source": farthest,
        "ratio": ratio,
        "threshold": threshold,
        "warning": None,
    }
    if skipped:
        out["skipped"] = skipped
    if ratio is not None and ratio > threshold:
        out["warning"] = warning_text(out)
    return out


def warning_text(rec: dict[str, Any]) -> str:
    """The warning of a merge beyond the threshold, with its numbers and its farthest layers."""
    merged, ratio, threshold = rec["merged"], rec["ratio"], rec["threshold"]
    far = rec["farthest_source"]
    by_layer = []
    for lay, d in merged["layers"].items():
        srcs = [s["layers"].get(lay) for s in rec["sources"]]
        top = max((v for v in srcs if v is not None), default=None)
        if d is not None and top:
            by_layer.append((d / top, lay))
    worst = ", ".join(f"layer {lay}: {r:.2f}x" for r, lay in sorted(by_layer, reverse=True)[:3])
    return (
        f"the merge moved the weights {_pct(merged['overall'])} of the base's norm away from the "
        f"base, {ratio:.2f} times the farthest source ({_pct(far)}; warning above "
        f"{threshold:.2f}x for {len(rec['sources'])} sources); largest per layer: {worst}. "
        "Methods that move far beyond their sources tend to lose the sources' skills (on LLMs, "
        "arXiv 2511.21437): evaluate it; a higher density (less of DARE's 1/p rescale), a "
        "lower lambda or smaller weights move it less."
    )


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"
