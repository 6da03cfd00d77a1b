"""The one rule for slerp over more than two models, read by the config check and the planner.

SLERP interpolates exactly two models. A config that gives one tensor more (``n_models``, the
most any tensor merges) runs ties with a base model and multislerp without, with a warning
(`alloy.plan.planner.choose_method`; ``--strict`` makes it an error). The config check accepts
the parameters of both replacements, since it cannot yet tell which one runs.
"""

from __future__ import annotations

WITH_BASE, WITHOUT_BASE = "ties", "multislerp"


def slerp_fallbacks(method: str, n_models: int) -> tuple[str, str] | None:
    """The methods that replace ``method`` over ``n_models`` models (with a base, without
    one), or None where it runs as written."""
    if method != "slerp" or n_models <= 2:
        return None
    return WITH_BASE, WITHOUT_BASE
