"""Parameter bounds shared by the method schemas: a bad value is a validation error at plan
time, naming the parameter (`alloy.plan.planner.resolve_params`), not a failure mid-merge.

Weights and scales are finite and at most `MAX_SCALE` in magnitude, so that sums of them
(``math.fsum``, the divisors) cannot overflow and a typo such as ``1e400`` is caught.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_SCALE = 1e6

# A weight, lambda or other multiplier: finite, |value| <= MAX_SCALE.
Scale = Annotated[float, Field(ge=-MAX_SCALE, le=MAX_SCALE, allow_inf_nan=False)]
# A share of a tensor or a probability: in [0, 1].
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
# A tolerance or distance: finite, >= 0.
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# A task-vector density: the share kept, >= 0. Values above 1 keep everything, as mergekit
# reads them (its sparsifiers return the task vector unchanged for density >= 1).
Density = Annotated[float, Field(ge=0, allow_inf_nan=False)]
