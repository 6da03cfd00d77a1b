"""The built-in merge methods: importing this module runs their `@method` registrations."""

from alloy.methods import (  # noqa: F401
    breadcrumbs,
    dare,
    della,
    karcher,
    linear,
    model_stock,
    passthrough,
    ram,
    sce,
    selective,
    slerp,
    spectral,
    task_arithmetic,
    ties,
)
