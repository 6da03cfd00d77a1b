"""Alloy: merge fine-tuned language-model checkpoints into one model, without training.

>>> import alloy
>>> alloy.merge("config.yml", "./merged")  # doctest: +SKIP

Every name here is explicit: the entry points, the types they take and return, and the
errors they raise (`alloy.errors` draws the tree).

The names are loaded on first use (PEP 562): ``import alloy`` (and so the `alloy` command's
start-up) imports only the version and the error tree, not torch. ``from alloy import merge``
and ``alloy.merge`` work as if everything were imported eagerly.
"""

import importlib as _importlib
import sys as _sys
import types as _types
import typing as _typing

# first: Ctrl-C while `alloy` starts exits 130 without a traceback
import alloy._interrupt  # noqa: F401
from alloy._version import __version__
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

if _typing.TYPE_CHECKING:
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
        record_evaluation,
        render_report,
    )
    from alloy.api_search import SearchResult, search
    from alloy.arch.differences import CompatReport
    from alloy.config.load import load_config
    from alloy.config.schema import MergeConfig, ModelRef
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import Evaluation
    from alloy.lora.extract import ExtractResult
    from alloy.lora.merge import LoraMergeResult
    from alloy.methods.registry import MethodSpec, all_methods, get_method
    from alloy.plan.planner import MergePlan, TensorJob
    from alloy.search.run import SearchOptions

# The lazily loaded names and the module each comes from (the TYPE_CHECKING imports above,
# which tests/test_startup.py checks against this table).
_LAZY: dict[str, str] = {
    "Analysis": "alloy.analysis.analyze",
    "SourceRecord": "alloy.analysis.inventory",
    "Recommendation": "alloy.analysis.recommend",
    "MergeResult": "alloy.api",
    "analyze": "alloy.api",
    "check": "alloy.api",
    "evaluate_merge": "alloy.api",
    "inventory": "alloy.api",
    "lora_extract": "alloy.api",
    "lora_merge": "alloy.api",
    "merge": "alloy.api",
    "plan": "alloy.api",
    "recommend": "alloy.api",
    "record_evaluation": "alloy.api",
    "render_report": "alloy.api",
    "CompatReport": "alloy.arch.differences",
    "load_config": "alloy.config.load",
    "MergeConfig": "alloy.config.schema",
    "ModelRef": "alloy.config.schema",
    "EvalOptions": "alloy.evaluate.models",
    "Evaluation": "alloy.evaluate.run",
    "ExtractResult": "alloy.lora.extract",
    "LoraMergeResult": "alloy.lora.merge",
    "MethodSpec": "alloy.methods.registry",
    "all_methods": "alloy.methods.registry",
    "get_method": "alloy.methods.registry",
    "MergePlan": "alloy.plan.planner",
    "TensorJob": "alloy.plan.planner",
    "SearchResult": "alloy.api_search",
    "search": "alloy.api_search",
    "SearchOptions": "alloy.search.run",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'alloy' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """The `alloy` module's type. Importing a submodule sets it as an attribute of its parent;
    for ``alloy.plan`` (the subpackage) that would hide `alloy.plan` (the function). An eager
    ``__init__`` imported the function after the subpackage; here the export always wins."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

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
    "record_evaluation",
    "render_report",
    "search",
]
