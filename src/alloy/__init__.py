"""Alloy: merge fine-tuned language-model checkpoints into one model, without training.

>>> import alloy
>>> alloy.merge("config.yml", "./merged")  # doctest: +SKIP
"""

# first, before the heavy imports: Ctrl-C while `alloy` starts exits 130 without a traceback
import alloy._interrupt  # noqa: F401
from alloy._version import __version__
from alloy.api import MergeResult, evaluate_merge, merge, plan
from alloy.config.load import load_config
from alloy.errors import (
    AlloyError,
    CheckpointError,
    ConfigError,
    EvalDataError,
    EvaluationError,
    IncompatibleModelsError,
    LoraNotSupportedError,
    MergeComputationError,
    ModelNotFoundError,
    OutputError,
    UnknownMethodError,
)
from alloy.evaluate.models import EvalOptions
from alloy.methods.registry import all_methods, get_method

__all__ = [
    "AlloyError",
    "CheckpointError",
    "ConfigError",
    "EvalDataError",
    "EvalOptions",
    "EvaluationError",
    "IncompatibleModelsError",
    "LoraNotSupportedError",
    "MergeComputationError",
    "MergeResult",
    "ModelNotFoundError",
    "OutputError",
    "UnknownMethodError",
    "__version__",
    "all_methods",
    "evaluate_merge",
    "get_method",
    "load_config",
    "merge",
    "plan",
]
