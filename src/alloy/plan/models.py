"""The input models of a merge: each distinct checkpoint opened once, headers only.

A model reference ``base+adapter``, or a bare PEFT adapter directory (its base read from
``adapter_config.json``'s ``base_model_name_or_path``, or given by ``lora_base``), opens as the
base checkpoint with the adapter applied on the fly (`alloy.io.lora.source.LoraSource`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from alloy.arch.infer import ArchInfo, infer, is_output_embedding, known
from alloy.config.schema import MergeConfig, ModelRef
from alloy.errors import AlloyError, ConfigError, ConfigIssue, ModelNotFoundError, several
from alloy.io.gguf import GGUFSource
from alloy.io.hub import resolve_model
from alloy.io.lora.adapter import is_adapter_dir, open_adapter
from alloy.io.lora.source import LoraSource
from alloy.io.sources import (
    SafetensorsCheckpoint,
    TensorSource,
    TorchBinCheckpoint,
    open_weights,
    read_json,
    read_past_cache,
)


@dataclass
class InputModel:
    ref: ModelRef
    path: Path  # the (base) checkpoint directory: config.json, tokenizer
    weights: SafetensorsCheckpoint | TorchBinCheckpoint | GGUFSource | LoraSource
    config: dict[str, Any]
    arch: ArchInfo
    adapter: Path | None = None  # the LoRA adapter applied on the fly, if any

    def has(self, name: str) -> bool:
        return name in self._names

    def __post_init__(self) -> None:
        self._names = set(self.arch.names)

    @property
    def paths(self) -> list[Path]:
        """Every directory this input reads (an output must not overlap any of them)."""
        return [self.path, *([self.adapter] if self.adapter else [])]

    def close(self) -> None:
        self.weights.close()


class _Opener:
    """Opens checkpoints and adapters once each, however many references share them."""

    def __init__(self, config_dir: Path | None, lora_base: ModelRef | None) -> None:
        self.config_dir = config_dir
        self.lora_base = lora_base
        self.used_lora_base = False
        self.plain: dict[Path, InputModel] = {}
        self.adapted: dict[tuple[Path, Path], InputModel] = {}

    def open(self, ref: ModelRef) -> InputModel:
        path = resolve_model(ModelRef(ref.path, ref.revision), self.config_dir)
        if ref.lora is not None:
            return self._adapted(ref, path, resolve_model(ref.lora, self.config_dir))
        if is_adapter_dir(path):
            return self._adapted(ref, self._base_of(ref, path), path)
        return self._plain(ref, path)

    def _plain(self, ref: ModelRef, path: Path) -> InputModel:
        if path not in self.plain:
            if is_adapter_dir(path):
                raise ModelNotFoundError(
                    f"{ref}: {path} is a LoRA adapter, not a base model; an adapter applies to "
                    "a full checkpoint (config.json and weights)."
                )
            weights = open_weights(path)
            config = _config(path)
            self.plain[path] = InputModel(
                ref, path, weights, config, infer(weights.names(), config)
            )
        return self.plain[path]

    def _base_of(self, ref: ModelRef, adapter: Path) -> Path:
        if self.lora_base is not None:
            self.used_lora_base = True
            return resolve_model(self.lora_base, self.config_dir)
        named = open_adapter(adapter)
        try:
            base, rev = named.base_model, named.base_revision
        finally:
            named.close()
        if base is None:
            raise ModelNotFoundError(
                f"{ref}: the adapter {adapter} does not name its base model "
                "(adapter_config.json has no base_model_name_or_path); give it as "
                "`BASE+ADAPTER` or with --lora-base BASE."
            )
        try:
            return resolve_model(ModelRef(base, rev), self.config_dir)
        except ModelNotFoundError as e:
            raise ModelNotFoundError(
                f"{ref}: the adapter's base model {base!r} (adapter_config.json "
                f"base_model_name_or_path) cannot be found: {e} Give the base as "
                "`BASE+ADAPTER` or with --lora-base BASE."
            ) from e

    def _adapted(self, ref: ModelRef, base_path: Path, adapter_path: Path) -> InputModel:
        key = (base_path, adapter_path)
        if key not in self.adapted:
            base = self._plain(ModelRef(str(base_path)), base_path)
            adapter = open_adapter(adapter_path)
            try:
                source = LoraSource(
                    base.weights,
                    adapter,
                    model_prefixes=known().model_prefixes,
                    is_output_embedding=is_output_embedding,
                )
            except BaseException:
                adapter.close()
                raise
            self.adapted[key] = InputModel(
                ref,
                base_path,
                source,
                base.config,
                infer(source.names(), base.config),
                adapter=adapter_path,
            )
        return self.adapted[key]


def _config(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.json"
    return read_json(cfg_path) if cfg_path.is_file() else {}


class OpenedModels(Mapping[ModelRef, InputModel]):
    """The opened input models of a merge, by reference; the caller closes them once (a
    context manager), and hands their tensors to the executor with `sources`."""

    def __init__(self, models: dict[ModelRef, InputModel]) -> None:
        self._models = models

    def __getitem__(self, ref: ModelRef) -> InputModel:
        return self._models[ref]

    def __iter__(self) -> Iterator[ModelRef]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def sources(self) -> dict[ModelRef, TensorSource]:
        """Each reference's tensors (what `alloy.plan.executor.Executor` reads)."""
        return {ref: m.weights for ref, m in self._models.items()}

    def close(self) -> None:
        close_all(self._models)

    def __enter__(self) -> OpenedModels:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _open_each(
    refs: Sequence[ModelRef], config_dir: Path | None, lora_base: ModelRef | None
) -> tuple[dict[ModelRef, InputModel], list[AlloyError]]:
    """Open every referenced model; problems are returned, not raised, to be reported together.

    ``lora_base`` overrides the base of every input that is a bare adapter directory."""
    opener = _Opener(config_dir, lora_base)
    out: dict[ModelRef, InputModel] = {}
    errors: list[AlloyError] = []
    for ref in refs:
        try:
            out[ref] = opener.open(ref)
        except AlloyError as e:
            errors.append(e)
    if lora_base is not None and not opener.used_lora_base and not errors:
        errors.append(
            ConfigError(
                [
                    ConfigIssue(
                        f"--lora-base {lora_base} was given, but no input is a bare LoRA adapter "
                        "directory (inputs written BASE+ADAPTER name their base themselves)",
                        "",
                    )
                ]
            )
        )
    return out, errors


def open_models(
    refs: Sequence[ModelRef], config_dir: Path | None = None, lora_base: ModelRef | None = None
) -> OpenedModels:
    """Open every referenced model (headers only), each checkpoint once; raise the problems
    together (one error as is, several listed), with nothing left open then.

    ``lora_base`` overrides the base of every input that is a bare adapter directory."""
    opened, errors = _open_each(refs, config_dir, lora_base)
    if errors:
        close_all(opened)
        raise several(errors)
    import psutil

    read_past_cache([m.weights for m in opened.values()], psutil.virtual_memory().available)
    return OpenedModels(opened)


def open_models_of(config: MergeConfig, lora_base: ModelRef | None = None) -> OpenedModels:
    """`open_models` of every model ``config`` references, relative paths read from the
    config's directory."""
    config_dir = Path(config.source_file).parent if config.source_file else None
    return open_models(config.all_models(), config_dir, lora_base)


def open_all(refs: Sequence[ModelRef], config_dir: Path | None = None) -> OpenedModels:
    """`open_models` without a ``lora_base``."""
    return open_models(refs, config_dir)


def close_all(opened: Mapping[ModelRef, InputModel]) -> None:
    """Close every opened model once (two references may share one model)."""
    for m in {id(m): m for m in opened.values()}.values():
        m.close()
