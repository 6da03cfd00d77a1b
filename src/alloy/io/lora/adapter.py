"""Reading PEFT LoRA adapters: ``adapter_config.json`` and the adapter weights, lazily.

A PEFT adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or
``adapter_model.bin``). Its tensors are named after the model's modules behind PEFT's
``base_model.model.`` prefix::

    <module>.lora_A.weight          A [r, in]      (nn.Linear, GPT-2 Conv1D)
    <module>.lora_B.weight          B [out, r]
    <module>.lora_B.bias            b [out]        (lora_bias=True)
    <module>.lora_embedding_A       A [r, vocab]   (nn.Embedding)
    <module>.lora_embedding_B       B [dim, r]
    <module>.base_layer.<param>     a replacement of the module's own parameter
    <other>.<param>                 a replacement (modules_to_save, bias="all")

The delta of a module is ``scale · B @ A`` with ``scale = alpha / r`` (``alpha / sqrt(r)`` with
``use_rslora``), where ``r`` and ``alpha`` come from ``rank_pattern`` / ``alpha_pattern`` when one
of their keys matches the module name (PEFT's rule: the key is a regular expression that must
match the whole name or a suffix of it starting after a dot; the first matching key wins).
Nothing here imports ``peft``: the config is read as JSON.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alloy.errors import CheckpointError, LoraNotSupportedError
from alloy.io.lora.config_check import check_adapter_numbers
from alloy.io.sources import SafetensorsFile, TensorInfo, TorchBinCheckpoint, read_json

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."

# LoraConfig fields that switch on a LoRA variant whose merge is not W + scale·B@A.
_VARIANTS = {
    "use_dora": "DoRA (use_dora)",
    "use_qalora": "QA-LoRA (use_qalora)",
    "alora_invocation_tokens": "aLoRA (alora_invocation_tokens)",
    "velora_config": "VeLoRA (velora_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "use_bdlora": "BD-LoRA (use_bdlora)",
    "arrow_config": "Arrow (arrow_config)",
    "kasa_config": "KaSA (kasa_config)",
    "target_parameters": "LoRA on parameters (target_parameters)",
    "layer_replication": "layer replication (layer_replication)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
}
# init_lora_weights values whose adapters are relative to a modified (residual) base model.
_RESIDUAL_INITS = ("pissa", "olora", "corda")


def is_adapter_dir(path: Path) -> bool:
    """A PEFT adapter directory: ``adapter_config.json`` and no full-model weights."""
    if not (path / CONFIG_NAME).is_file():
        return False
    model_files = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return not any((path / f).is_file() for f in (*model_files, "pytorch_model.bin.index.json"))


def pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    """The first key of ``patterns`` matching ``module`` by PEFT's rule, or None."""
    for key in patterns:
        try:
            if re.fullmatch(rf"(?:.*\.)?(?:{key})", module):
                return key
        except re.error as e:
            raise CheckpointError(
                f"rank_pattern/alpha_pattern key {key!r} is not a valid regular expression ({e})"
            ) from e
    return None


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: its factors' keys and its scale."""

    name: str  # module path in the model, e.g. "model.layers.0.self_attn.q_proj"
    a_key: str
    b_key: str
    bias_key: str | None  # lora_B.bias (lora_bias=True)
    embedding: bool  # lora_embedding_A/B: the delta is (B@A)ᵀ
    rank: int
    alpha: float
    scale: float


class Adapter:
    """A PEFT LoRA adapter directory, validated; tensors read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        cfg_file = path / CONFIG_NAME
        self.config: dict[str, Any] = read_json(cfg_file)  # a regular file, a JSON object
        _check_supported(self.config, cfg_file)
        check_adapter_numbers(self.config, cfg_file)
        self._file, self._keys = _open_weights(path)
        self.modules, self.replacements = self._classify(cfg_file)

    # -- config ------------------------------------------------------------------------------

    @property
    def base_model(self) -> str | None:
        v = self.config.get("base_model_name_or_path")
        return str(v) if v else None

    @property
    def base_revision(self) -> str | None:
        v = self.config.get("revision")
        return str(v) if v else None

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))

    def rank_alpha(self, module: str) -> tuple[int, float]:
        """``(r, alpha)`` of ``module`` after ``rank_pattern`` and ``alpha_pattern``."""
        rp = self.config.get("rank_pattern") or {}
        ap = self.config.get("alpha_pattern") or {}
        rk, ak = pattern_key(rp, module), pattern_key(ap, module)
        r = rp[rk] if rk is not None else self.config.get("r", 8)
        alpha = ap[ak] if ak is not None else self.config.get("lora_alpha", 8)
        return int(r), float(alpha)

    # -- tensors -----------------------------------------------------------------------------

    def info(self, key: str) -> TensorInfo:
        return self._file.info(key)

    def get(self, key: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return self._file.get(key, rows)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"Adapter({self.path})"

    # -- key classification --------------------------------------------------------------------

    def _classify(self, cfg_file: Path) -> tuple[dict[str, LoraModule], dict[str, str]]:
        parts: dict[str, dict[str, str]] = {}
        replacements: dict[str, str] = {}
        for key in self._keys:
            local = key.removeprefix(PEFT_PREFIX)
            for suffix, part in (
                (".lora_A.weight", "A"),
                (".lora_B.weight", "B"),
                (".lora_B.bias", "bias"),
                (".lora_embedding_A", "eA"),
                (".lora_embedding_B", "eB"),
            ):
                if local.endswith(suffix):
                    parts.setdefault(local[: -len(suffix)], {})[part] = key
                    break
            else:
                if "lora_" in local:
                    raise LoraNotSupportedError(
                        f"{self.path}: tensor {key!r} is not part of a plain LoRA adapter (DoRA "
                        "magnitudes, adapters saved under a non-default name, ...); Alloy applies "
                        "plain LoRA (lora_A/lora_B, lora_embedding_A/B) only."
                    )
                replacements[local.replace(".base_layer.", ".")] = key
        modules: dict[str, LoraModule] = {}
        rsl = bool(self.config.get("use_rslora", False))
        for name, p in parts.items():
            emb = "eA" in p or "eB" in p
            a, b = (p.get("eA"), p.get("eB")) if emb else (p.get("A"), p.get("B"))
            if a is None or b is None or (emb and ("A" in p or "B" in p)):
                raise CheckpointError(
                    f"{self.path}: module {name!r} has the adapter tensors {sorted(p.values())} "
                    "but not one lora_A/lora_B (or lora_embedding_A/B) pair; the adapter is "
                    "incomplete."
                )
            r, alpha = self.rank_alpha(name)
            ai, bi = self.info(a), self.info(b)
            if len(ai.shape) != 2 or len(bi.shape) != 2:
                raise LoraNotSupportedError(
                    f"{self.path}: module {name!r} has {len(ai.shape)}-D LoRA factors (a "
                    "convolution); Alloy applies LoRA to linear, Conv1D and embedding layers only."
                )
            if ai.shape[0] != r or bi.shape[1] != r:
                raise CheckpointError(
                    f"{self.path}: module {name!r} has factors A {list(ai.shape)} and B "
                    f"{list(bi.shape)}, but {cfg_file.name} gives it rank r={r} (r, "
                    "rank_pattern); the adapter and its config do not match."
                )
            scale = alpha / math.sqrt(r) if rsl else alpha / r
            modules[name] = LoraModule(name, a, b, p.get("bias"), emb, r, alpha, scale)
        if not modules and not replacements:
            raise CheckpointError(f"{self.path}: the adapter holds no tensors")
        return modules, replacements


def _check_supported(config: dict[str, Any], cfg_file: Path) -> None:
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise LoraNotSupportedError(
            f"{cfg_file}: peft_type is {config.get('peft_type')!r}; Alloy applies and merges "
            "LoRA adapters only (peft_type LORA). Merge this adapter into its base with PEFT "
            "(merge_and_unload) and use the result as a model."
        )
    for field, label in _VARIANTS.items():
        if config.get(field):
            raise LoraNotSupportedError(
                f"{cfg_file}: the adapter uses {label}, whose merge is not W + scale·B@A; Alloy "
                "applies plain LoRA only. Merge it with PEFT (merge_and_unload) and use the "
                "result as a model."
            )
    init = str(config.get("init_lora_weights", True)).lower()
    if init.startswith(_RESIDUAL_INITS) or init == "mica":
        raise LoraNotSupportedError(
            f"{cfg_file}: init_lora_weights is {config.get('init_lora_weights')!r}: the adapter "
            "is relative to a modified base model, not to the base it names. Save it with "
            "PEFT's path_initial_model_for_weight_conversion to get a plain LoRA adapter."
        )


def _open_weights(path: Path) -> tuple[SafetensorsFile | TorchBinCheckpoint, list[str]]:
    st, bin_ = (path / n for n in WEIGHT_NAMES)
    if st.is_file():
        f = SafetensorsFile(st)
        return f, f.names()
    if bin_.is_file():
        names = list(TorchBinCheckpoint._load(bin_))  # weights_only=True
        return TorchBinCheckpoint(path, dict.fromkeys(names, bin_.name), None), names
    raise CheckpointError(
        f"{path} has {CONFIG_NAME} but no adapter weights (expected {' or '.join(WEIGHT_NAMES)})."
    )


def open_adapter(path: Path) -> Adapter:
    """Open the PEFT LoRA adapter in directory ``path``."""
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{path} is not a PEFT adapter: it has no {CONFIG_NAME}. Give the directory that "
            "holds adapter_config.json and adapter_model.safetensors."
        )
    return Adapter(path)
