"""Distance from the base: each source's (measured by `alloy analyze`) and a merge's (predicted
by `alloy recommend` from the same sums).

The relative L2 distance of a model ``W`` from the base ``B`` over a set of tensors (a layer,
the whole model) is ``sqrt(Σ ‖W − B‖²) / sqrt(Σ ‖B‖²)``; for a source it is the relative norm
of its task vector ``δ_i = W_i − B``. A merge's distance is predicted from the sums an analysis
keeps (``‖δ_i‖²``, ``<δ_i, δ_j>``, ``‖B‖²`` and each task vector's energy in its top 10% and
50% entries), per layer and overall:

- **linear** (weights ``w_i``, normalized) and **task arithmetic** (``λ·w_i``): the merge is
  ``B + Σ c_i δ_i``, so ``‖Σ c_i δ_i‖² = Σ c_i² ‖δ_i‖² + 2 Σ_{i<j} c_i c_j <δ_i, δ_j>``: exact.
- **SLERP** at ``t`` between two fine-tunes: linear interpolation ``(1 − t) δ_1 + t δ_2``, plus
  the arc's outward bulge. Per tensor, SLERP's coefficients add up to
  ``cos((1 − 2t) θ / 2) / cos(θ / 2) ≈ 1 + t (1 − t) θ² / 2`` for the angle θ between the two
  models, so the merge also moves by about ``t (1 − t) θ² / 2 · ‖B‖`` along the weights; θ is
  about ``‖δ_1 − δ_2‖ / ‖B‖`` for fine-tunes of one base. The tensors' bulges lie in different
  coordinates and add in squares; the estimate is the interpolation, ± that sum (``margin``).
- **TIES** (weights 1, normalized, λ = 1): an entry kept by one task vector passes unchanged,
  entries kept by several that agree are averaged (smaller), and a sign conflict keeps only
  the elected side's entries, so ``‖merge − B‖² <= Σ_i E_i(d_i) ‖δ_i‖²``, with ``E_i(d)`` the
  share of δ_i's energy in its top ``d`` entries (measured at 10% and 50%, interpolated on the
  chords between): an upper bound, reached when the kept entries do not overlap.
- **DARE-TIES**: DARE keeps each entry with probability ``p`` and rescales it by ``1 / p``, so
  the kept energy is ``‖δ_i‖² / p`` in expectation; then as TIES: ``Σ_i ‖δ_i‖² / p_i`` bounds
  it.

The warning threshold (shared with the merge report): `warn_threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from alloy.analysis.stats import Sums, pairs

if TYPE_CHECKING:
    from alloy.analysis.analyze import Analysis

WARN_FACTOR = 1.5


def warn_threshold(n_sources: int) -> float:
    """How many times the farthest source's distance a merge of ``n_sources`` may move before
    a warning: `WARN_FACTOR` · sqrt(max(n, 2) / 2).

    An interpolation (linear, SLERP, a disjoint mean of task vectors that rarely overlap) stays
    within the farthest source; task arithmetic at λ = 1 adds the task vectors, and n unrelated
    (orthogonal) ones of one size r reach sqrt(n)·r: 1.41·r for two. The factor 1.5 lies above
    that for two sources, so a merge beyond it has amplified the changes (DARE's 1/p rescale,
    a spectral rescale, λ > 1, or the same change counted twice); it grows as sqrt(n / 2) so
    that plain task arithmetic of many unrelated fine-tunes, which the published LLM study
    (arXiv 2511.21437) found to be the reliable method, is not flagged, while methods moving
    2-6 times further than it (TIES, TSV-M, Iso-C there) are."""
    return WARN_FACTOR * math.sqrt(max(n_sources, 2) / 2)


def relative(sq: float, base_sq: float) -> float | None:
    """``sqrt(sq / base_sq)``, None without a base norm."""
    return math.sqrt(max(sq, 0.0) / base_sq) if base_sq > 0 else None


def source_distances(a: Analysis) -> list[dict[str, Any]]:
    """Each source's distance from the base, overall and per layer (the analysis' groups)."""
    out = []
    for i, model in enumerate(a.models):
        out.append(
            {
                "model": model,
                "overall": relative(a.total.sq[i], a.total.base_sq),
                "layers": {str(g): relative(s.sq[i], s.base_sq) for g, s in a.groups.items()},
            }
        )
    return out


def _combination_sq(s: Sums, c: Sequence[float]) -> float:
    """``‖Σ c_i δ_i‖²`` from the sums."""
    total = sum(ci * ci * sq for ci, sq in zip(c, s.sq))
    total += 2 * sum(c[i] * c[j] * d for (i, j), d in zip(pairs(s.n), s.dot))
    return total


def energy_share(top10: float | None, top50: float | None, density: float) -> float:
    """The share of a task vector's energy in its top ``density`` entries, on the chords
    (0, 0)-(0.1, top10)-(0.5, top50)-(1, 1) (exact at 0.1, 0.5 and 1)."""
    if top10 is None or top50 is None:
        return 1.0
    points = [(0.0, 0.0), (0.1, top10), (0.5, top50), (1.0, 1.0)]
    for (x0, y0), (x1, y1) in pairwise(points):
        if density <= x1:
            return y0 + (y1 - y0) * (density - x0) / (x1 - x0)
    return 1.0


def _params(config: dict[str, Any], key: str, default: float) -> list[float]:
    return [float((m.get("parameters") or {}).get(key, default)) for m in config["models"]]


def _predicted_sq(method: str, config: dict[str, Any], s: Sums) -> tuple[float, float] | None:
    """(predicted ``‖merge − B‖²``, margin²) over the tensors of ``s``, for ``method``."""
    params = config.get("parameters") or {}
    if method == "linear":
        w = _params(config, "weight", 1.0)
        total = sum(w)
        return _combination_sq(s, [x / total for x in w]), 0.0
    if method == "task_arithmetic":
        lam = float(params.get("lambda", 1.0))
        return _combination_sq(s, [lam * x for x in _params(config, "weight", 1.0)]), 0.0
    if method in ("ties", "dare_ties"):
        dens = _params(config, "density", 1.0)
        if method == "dare_ties":
            return sum(sq / d for sq, d in zip(s.sq, dens)), 0.0
        shares = [
            energy_share(t10 / sq if sq else None, t50 / sq if sq else None, d)
            for t10, t50, sq, d in zip(s.top10, s.top50, s.sq, dens)
        ]
        return sum(e * sq for e, sq in zip(shares, s.sq)), 0.0
    return None


def _slerp(a: Analysis, t: float, tensors: list[Any]) -> tuple[float, float, float]:
    """(interpolation ``‖(1 − t) δ_1 + t δ_2‖²``, bulge², ``‖B‖²``) over ``tensors``."""
    lerp = bulge = base_sq = 0.0
    for x in tensors:
        s = x.sums
        lerp += _combination_sq(s, [1 - t, t])
        base_sq += s.base_sq
        if s.base_sq > 0:
            theta_sq = max(s.sq[0] + s.sq[1] - 2 * s.dot[0], 0.0) / s.base_sq
            bulge += (t * (1 - t) * theta_sq / 2) ** 2 * s.base_sq
    return lerp, bulge, base_sq


def predict(a: Analysis, method: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The predicted distance of ``config``'s merge (see the module docstring), overall and
    per layer, or None for a method this module does not predict or an analysis without a
    base. ``exact``: linear and task arithmetic; ``bound``: TIES and DARE-TIES (an upper
    bound); ``estimate``: SLERP (± ``margin``)."""
    if not a.has_base:
        return None
    if method == "slerp" and len(a.models) == 2:
        t = float((config.get("parameters") or {}).get("t", 0.5))
        groups: dict[str, list[Any]] = {}
        for x in a.tensors:
            groups.setdefault(str(x.group), []).append(x)
        per = {g: _slerp(a, t, xs) for g, xs in groups.items()}
        lerp, bulge, base_sq = (sum(v[k] for v in per.values()) for k in range(3))
        return {
            "method": method,
            "kind": "estimate",
            "overall": relative(lerp, base_sq),
            "margin": relative(bulge, base_sq),
            "layers": {g: relative(v[0], v[2]) for g, v in per.items()},
        }
    total = _predicted_sq(method, config, a.total)
    if total is None:
        return None
    kind = "exact" if method in ("linear", "task_arithmetic") else "bound"
    layers = {}
    for g, s in a.groups.items():
        v = _predicted_sq(method, config, s)
        layers[str(g)] = relative(v[0], s.base_sq) if v is not None else None
    return {
        "method": method,
        "kind": kind,
        "overall": relative(total[0], a.total.base_sq),
        "margin": 0.0,
        "layers": layers,
    }


def distance_record(
    a: Analysis, method: str | None, config: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The sources' distances and the recommended merge's predicted one, with the ratio to the
    farthest source, the threshold and whether it is exceeded."""
    if not a.has_base:
        return None
    sources = source_distances(a)
    predicted = predict(a, method, config) if method and config else None
    far = [s["overall"] for s in sources if s["overall"] is not None]
    farthest = max(far) if far else None
    ratio = None
    if predicted is not None and predicted["overall"] is not None and farthest:
        ratio = predicted["overall"] / farthest
    threshold = warn_threshold(len(sources))
    return {
        "sources": sources,
        "farthest_source": farthest,
        "predicted": predicted,
        "ratio": ratio,
        "threshold": threshold,
        "beyond_threshold": ratio is not None and ratio > threshold,
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def distance_sentence(rec: dict[str, Any]) -> str:
    """One sentence for the rationale: the sources' distances and the merge's prediction."""
    srcs = ", ".join(_pct(s["overall"]) for s in rec["sources"])
    text = f"Distance from the base (relative L2): the fine-tunes moved {srcs}"
    p = rec["predicted"]
    if p is None or p["overall"] is None:
        return text + "; this method's distance is not predicted (the merge report measures it)."
    how = {
        "exact": "exactly, from the task vectors' norms and dot products",
        "bound": "an upper bound, from the energy each model keeps",
        "estimate": f"estimated as the interpolation, ± {_pct(p['margin'])} for the arc",
    }[p["kind"]]
    text += (
        f"; the {p['method']} merge is predicted at {_pct(p['overall'])} ({how}), "
        f"{rec['ratio']:.2f} times the farthest source"
    )
    if rec["beyond_threshold"]:
        return text + (
            f", beyond the {rec['threshold']:.2f}x at which a merge moves the weights much "
            "further than any fine-tune did: evaluate it before use."
        )
    return text + f" (a merge report warns above {rec['threshold']:.2f}x)."
