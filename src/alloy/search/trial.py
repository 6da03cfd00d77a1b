"""One process's trials: the models opened once, one transformers model built once, each
trial merged in memory (`MemoryWriter`, nothing written to disk) and loaded into it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from alloy.config.load import parse_config
from alloy.config.modelref import ModelRefSyntaxError, parse_model_ref
from alloy.config.schema import MergeConfig, ModelRef
from alloy.errors import AlloyError, ConfigError, ConfigIssue, EvaluationError, UsageError
from alloy.evaluate.models import DEFAULT_MAX_LENGTH, EvalOptions, LoadedModel, transformers_module
from alloy.evaluate.perplexity import perplexity
from alloy.evaluate.probes import run_probe_sets
from alloy.evaluate.run import EvalSets
from alloy.io.writer import MemoryWriter
from alloy.plan.executor import Executor
from alloy.plan.models import InputModel, OpenedModels, open_models
from alloy.plan.planner import build_plan
from alloy.search.space import METHOD, SearchSpace, example_values
from alloy.search.splits import Splits

Values = dict[tuple[str, str], float]
Tensors = dict[str, torch.Tensor]


def _reference(value: str | None, configs: list[MergeConfig]) -> ModelRef:
    if value is not None:
        try:
            return parse_model_ref(value)
        except ModelRefSyntaxError as e:
            raise UsageError(f"reference (--reference) {value!r}: {e}") from e
    bases = [c.base_model for c in configs if c.base_model is not None]
    if not bases:
        raise UsageError(
            "the search needs the model the fine-tunes started from: give --reference BASE "
            "(the config has no base_model)."
        )
    return bases[0]


def _context(config: Any) -> int:
    n = getattr(config, "max_position_embeddings", None)
    return min(n, DEFAULT_MAX_LENGTH) if isinstance(n, int) and n > 1 else DEFAULT_MAX_LENGTH


class TrialEvaluator:
    """Merges configs of ``space`` in memory and measures them on ``splits``."""

    def __init__(
        self,
        space: SearchSpace,
        splits: Splits,
        reference: str | None = None,
        options: EvalOptions | None = None,
        *,
        seed: int = 0,
        lora_base: str | None = None,
    ) -> None:
        self.space, self.splits, self.seed = space, splits, seed
        self.options = options or EvalOptions()
        configs = [
            parse_config(space.instantiate(example_values(space, m)), source=space.source)
            for m in space.methods
        ]
        self.reference = _reference(reference, configs)
        refs = list(dict.fromkeys([r for c in configs for r in c.all_models()]))
        self.source_refs = list(dict.fromkeys([self.reference, *refs]))
        base = parse_model_ref(lora_base) if lora_base else None
        config_dir = Path(space.source).parent if space.source else None
        self._config_dir, self._lora_base = config_dir, base
        self.models: OpenedModels = open_models(self.source_refs, config_dir, base)
        self._extra: list[OpenedModels] = []
        try:
            self._check_plans(configs)
            self._lm = self._build(self.models[self.reference].path)
        except BaseException:
            self.models.close()
            raise

    def _check_plans(self, configs: list[MergeConfig]) -> None:
        """Plan one config of each method of the space (headers only), so that a method the
        models or the config do not suit fails before the first trial, naming the method."""
        issues = []
        for method, cfg in zip(self.space.methods, configs, strict=True):
            try:
                build_plan(cfg, self.models)
            except ConfigError as e:
                issues += [
                    ConfigIssue(f"with merge_method {method}: {i.message}", i.path, i.line)
                    for i in e.issues
                ]
            except AlloyError as e:
                issues.append(ConfigIssue(f"with merge_method {method}: {e}", METHOD, None))
        if issues:
            raise ConfigError(
                [
                    i if i.line else ConfigIssue(i.message, i.path, self.space.lines.get(i.path))
                    for i in issues
                ],
                self.space.source,
            )

    def _build(self, path: Path) -> LoadedModel:
        """The one model every trial is loaded into: the reference's architecture."""
        transformers = transformers_module()
        common = {"trust_remote_code": self.options.trust_remote_code, "local_files_only": True}
        try:
            cfg = transformers.AutoConfig.from_pretrained(str(path), **common)
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **common)
            model = transformers.AutoModelForCausalLM.from_config(
                cfg, trust_remote_code=self.options.trust_remote_code
            )
        except Exception as e:
            raise EvaluationError(
                f"cannot build the model of {path} for the search ({type(e).__name__}: {e})."
            ) from e
        dtype = (
            torch.float32 if self.options.dtype == "auto" else getattr(torch, self.options.dtype)
        )
        model.to(device=self.options.device, dtype=dtype)
        model.eval()
        return LoadedModel("trial", path, model, tokenizer, _context(cfg))

    def close(self) -> None:
        for opened in (self.models, *self._extra):
            opened.close()

    def _opened(self, cfg: MergeConfig) -> dict[ModelRef, InputModel]:
        """The opened models, with those of ``cfg`` that no trial of the space uses (a
        baseline's, the recommendation's) opened on first use."""
        models: dict[ModelRef, InputModel] = dict(self.models)
        for extra in self._extra:
            models.update(extra)
        missing = [r for r in cfg.all_models() if r not in models]
        if missing:
            config_dir = Path(cfg.source_file).parent if cfg.source_file else self._config_dir
            extra = open_models(missing, config_dir, self._lora_base)
            self._extra.append(extra)
            models.update(extra)
        return models

    def __enter__(self) -> TrialEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def merge(self, config: Mapping[str, Any], source: str | None = None) -> Tensors:
        """The merged tensors of one trial's config, in memory (relative paths from the
        directory of ``source``, by default the search config's)."""
        cfg = parse_config(dict(config), source=source or self.space.source)
        models = self._opened(cfg)
        plan = build_plan(cfg, models)
        layout = [t for shard in plan.shard_layout() for t in shard]
        writer = MemoryWriter(layout)
        sources = {ref: m.weights for ref, m in models.items()}
        Executor(plan, sources, writer, device="cpu", seed=self.seed).run()
        return writer.tensors

    def source_tensors(self, ref: ModelRef) -> Tensors:
        src = self.models.sources()[ref]
        return {n: src.get(n) for n in src.names()}

    def load(self, tensors: Mapping[str, torch.Tensor]) -> None:
        model = self._lm.model
        result = model.load_state_dict(dict(tensors), strict=False)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        missing = [k for k in result.missing_keys if not (tied and k.endswith("lm_head.weight"))]
        if missing or result.unexpected_keys:
            raise EvaluationError(
                f"the merged tensors do not fit the model of {self.reference}: missing "
                f"{missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}."
            )

    def measure(self, tensors: Mapping[str, torch.Tensor], split: str) -> Values:
        """Load ``tensors`` and measure them on the ``split``'s sets."""
        self.load(tensors)
        return self._measure(self.splits.of(split))

    def _measure(self, sets: EvalSets) -> Values:
        out: Values = {}
        with torch.no_grad():
            for d in sets.data:
                out[(d.name, "perplexity")] = perplexity(self._lm, d, self.options).perplexity
            for p, res in zip(sets.probes, run_probe_sets(self._lm, sets.probes, self.options)):
                for metric, v in res.metrics.items():
                    out[(p.name, metric)] = v
        return out

    def measure_sources(self) -> dict[str, dict[str, Values]]:
        """Every source's values on both splits: {split: {label: values}}."""
        out: dict[str, dict[str, Values]] = {"validation": {}, "test": {}}
        for ref in self.source_refs:
            tensors = self.source_tensors(ref)
            for split in out:
                out[split][str(ref)] = self.measure(tensors, split)
        return out

    def run(self, config: Mapping[str, Any], split: str = "validation") -> Values:
        """One trial: merge ``config`` in memory and measure it on ``split``."""
        return self.measure(self.merge(config), split)
