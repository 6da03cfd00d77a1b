"""The built-in merge methods: importing this module runs their `@method` registrations."""

from alloy.methods import (  # noqa: F401
    karcher,
    linear,
    model_stock,
    passthrough,
    ram,
    sce,
    selective,
    slerp,
    sparse_task_arithmetic,
    spectral,
    task_arithmetic,
)
