"""Alloy: merge fine-tuned language-model checkpoints into one model, without training.

>>> import alloy
>>> alloy.merge("config.yml", "./merged")  # doctest: +SKIP
"""

from alloy._version import __version__
from alloy.api import MergeResult, merge, plan
from alloy.config.load import load_config
from alloy.errors import (
    AlloyError,
    CheckpointError,
    ConfigError,
    IncompatibleModelsError,
    LoraNotSupportedError,
    MergeComputationError,
    ModelNotFoundError,
    OutputError,
    UnknownMethodError,
)
from alloy.methods.registry import all_methods, get_method

__all__ = [
    "AlloyError",
    "CheckpointError",
    "ConfigError",
    "IncompatibleModelsError",
    "LoraNotSupportedError",
    "MergeComputationError",
    "MergeResult",
    "ModelNotFoundError",
    "OutputError",
    "UnknownMethodError",
    "__version__",
    "all_methods",
    "get_method",
    "load_config",
    "merge",
    "plan",
]
