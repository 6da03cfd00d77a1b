"""The input models of a merge: each distinct checkpoint opened once, headers only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloy.arch.infer import ArchInfo, infer
from alloy.config.schema import ModelRef
from alloy.errors import AlloyError
from alloy.io.hub import resolve_model
from alloy.io.sources import SafetensorsCheckpoint, TorchBinCheckpoint, open_weights, read_json


@dataclass
class InputModel:
    ref: ModelRef
    path: Path
    weights: SafetensorsCheckpoint | TorchBinCheckpoint
    config: dict[str, Any]
    arch: ArchInfo

    def has(self, name: str) -> bool:
        return name in self._names

    def __post_init__(self) -> None:
        self._names = set(self.arch.names)

    def close(self) -> None:
        self.weights.close()


def open_models(
    refs: list[ModelRef], config_dir: Path | None
) -> tuple[dict[ModelRef, InputModel], list[AlloyError]]:
    """Open every referenced model; problems are returned, not raised, to be reported together."""
    by_path: dict[Path, InputModel] = {}
    out: dict[ModelRef, InputModel] = {}
    errors: list[AlloyError] = []
    for ref in refs:
        try:
            path = resolve_model(ref, config_dir)
            if path not in by_path:
                weights = open_weights(path)
                cfg_path = path / "config.json"
                config = read_json(cfg_path) if cfg_path.is_file() else {}
                by_path[path] = InputModel(
                    ref, path, weights, config, infer(weights.names(), config)
                )
            out[ref] = by_path[path]
        except AlloyError as e:
            errors.append(e)
    return out, errors
