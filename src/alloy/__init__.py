"""Alloy: merge fine-tuned language-model checkpoints into one model, without training.

>>> import alloy
>>> alloy.merge("config.yml", "./merged")  # doctest: +SKIP

Every name here is explicit: the entry points, the types they take and return, and the
errors they raise (`alloy.errors` draws the tree).
"""

from alloy._version import __version__
from alloy.analysis.analyze import Analysis
from alloy.analysis.inventory import SourceRecord
from alloy.analysis.recommend import Recommendation
from alloy.api import (
    MergeResult,
    analyze,
    check,
    evaluate_merge,
    inventory,
    lora_extract,
    lora_merge,
    merge,
    plan,
    recommend,
)
from alloy.api_search import SearchResult, search
from alloy.arch.differences import CompatReport
from alloy.config.load import load_config
from alloy.config.schema import MergeConfig, ModelRef
from alloy.errors import (
    AlloyError,
    CheckpointError,
    ConfigError,
    ConfigIssue,
    DeviceError,
    EvalDataError,
    EvaluationError,
    IncompatibleModelsError,
    LoraNotSupportedError,
    MergeComputationError,
    ModelNotFoundError,
    ModelRefSyntaxError,
    OutputError,
    UnknownMethodError,
    UsageError,
)
from alloy.evaluate.models import EvalOptions
from alloy.evaluate.run import Evaluation
from alloy.lora.extract import ExtractResult
from alloy.lora.merge import LoraMergeResult
from alloy.methods.registry import MethodSpec, all_methods, get_method
from alloy.plan.planner import MergePlan, TensorJob
from alloy.search.run import SearchOptions

__all__ = [
    "AlloyError",
    "Analysis",
    "CheckpointError",
    "CompatReport",
    "ConfigError",
    "ConfigIssue",
    "DeviceError",
    "EvalDataError",
    "EvalOptions",
    "Evaluation",
    "EvaluationError",
    "ExtractResult",
    "IncompatibleModelsError",
    "LoraMergeResult",
    "LoraNotSupportedError",
    "MergeComputationError",
    "MergeConfig",
    "MergePlan",
    "MergeResult",
    "MethodSpec",
    "ModelNotFoundError",
    "ModelRef",
    "ModelRefSyntaxError",
    "OutputError",
    "Recommendation",
    "SearchOptions",
    "SearchResult",
    "SourceRecord",
    "TensorJob",
    "UnknownMethodError",
    "UsageError",
    "__version__",
    "all_methods",
    "analyze",
    "check",
    "evaluate_merge",
    "get_method",
    "inventory",
    "load_config",
    "lora_extract",
    "lora_merge",
    "merge",
    "plan",
    "recommend",
    "search",
]
