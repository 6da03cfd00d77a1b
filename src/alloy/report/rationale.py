"""The Method Rationale: what the method does, and the measured facts it acts on."""

from __future__ import annotations

from typing import Any

from alloy.methods.registry import get_method
from alloy.tabulate import percent

# What each method does with task vectors, and where it fits: the reading of the facts.
HOW = {
    "linear": (
        "Linear averages the weights. It fits fine-tunes that moved the same way (task vectors "
        "with a high cosine similarity); where they disagree, the average dilutes each one."
    ),
    "slerp": (
        "SLERP interpolates between two models along the sphere, keeping the weights' norm "
        "where a straight average would shrink it; `t` sets how far from the base model."
    ),
    "multislerp": (
        "Multi-SLERP takes a spherical weighted mean of several models, the generalisation of "
        "SLERP beyond two inputs."
    ),
    "task_arithmetic": (
        "Task arithmetic adds the weighted task vectors to the base. It keeps each fine-tune's "
        "change in full, so it works when the task vectors are small and do not conflict."
    ),
    "ties": (
        "TIES trims each task vector to its largest entries (density), elects a sign per entry "
        "by total mass and averages only the entries that agree: it is built for task vectors "
        "that conflict in sign."
    ),
    "dare_ties": (
        "DARE-TIES drops task-vector entries at random (keeping a share `density`), rescales "
        "the rest by 1/density, then elects signs as TIES does: for small, dense, redundant "
        "deltas."
    ),
    "dare_linear": (
        "DARE drops task-vector entries at random and rescales the rest, then adds them as "
        "task arithmetic does: for small, dense, redundant deltas that do not conflict."
    ),
    "passthrough": (
        "Passthrough copies tensors (layer ranges) from one model each: a frankenmerge. No "
        "weights are combined, so there are no task vectors to compare."
    ),
}


def _pct(x: float) -> str:
    return percent(x, lambda v: 2 if v < 0.1 else 0)  # 4.12%, 37%


def fact_sentences(facts: dict[str, Any]) -> list[str]:
    """Plain statements of the measured facts, each with its number."""
    out = []
    inputs = [i for i in facts.get("inputs", []) if i.get(facts["measure"]) is not None]
    sample = (
        "all elements" if facts.get("exact") else f"{facts['sampled_elements']:,} sampled elements"
    )
    if facts.get("with_base") and inputs:
        sizes = ", ".join(f"`{i['model']}` {_pct(i['relative_norm'])}" for i in inputs)
        out.append(
            f"Task vectors (fine-tune minus `{facts['base']}`), over {sample} of "
            f"{facts['tensors']} tensors: each changes the base by a share of its norm of "
            f"{sizes}."
        )
        norms = [i["relative_norm"] for i in inputs]
        if min(norms) > 0 and max(norms) / min(norms) >= 3:
            out.append(
                f"One fine-tune moved {max(norms) / min(norms):.1f}x further from the base "
                "than another: with equal weights the larger task vector dominates."
            )
        if max(norms) > 0.1:
            out.append(
                "A task vector above 10% of the base norm is large: the fine-tune is far from "
                "its base, where methods built on task vectors lose accuracy."
            )
    elif inputs:
        sizes = ", ".join(f"`{i['model']}` {_pct(i['relative_distance_to_mean'])}" for i in inputs)
        out.append(
            f"Without a base model, over {sample} of {facts['tensors']} tensors, each input "
            f"lies from the inputs' mean at a share of its norm of {sizes}."
        )
    for p in facts.get("pairs", []):
        c = p.get("cosine")
        if c is None:
            continue
        what = "task vectors" if facts.get("with_base") else "weights"
        if c > 0.9:
            reading = "nearly the same direction"
        elif c > 0.1:
            reading = "partly aligned"
        elif c >= -0.1:
            reading = "nearly orthogonal: independent changes"
        else:
            reading = "opposed: they undo each other where they overlap"
        out.append(
            f"Cosine similarity of the {what} of `{p['a']}` and `{p['b']}`: {c:.3f} ({reading})."
        )
    conflict = facts.get("sign_conflict")
    if conflict is not None:
        level = "high" if conflict > 0.4 else "moderate" if conflict > 0.2 else "low"
        out.append(
            f"Sign conflict: where two or more task vectors change an entry, their signs "
            f"disagree in {_pct(conflict)} of the entries ({level})."
        )
    return out


def rationale(method: str, facts: dict[str, Any], requested: str | None = None) -> dict[str, Any]:
    """The rationale record: the method's description and the fact sentences."""
    spec = get_method(method)
    text = [f"`{spec.name}`: {spec.summary} Paper: {spec.paper}."]
    if requested and requested != method:
        text.append(f"The config asked for `{requested}`; Alloy ran `{method}` (see Warnings).")
    if method in HOW:
        text.append(HOW[method])
    return {
        "method": method,
        "source": "method description",
        "description": " ".join(text),
        "facts": facts,
        "statements": fact_sentences(facts),
    }
