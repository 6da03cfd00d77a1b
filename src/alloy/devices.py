"""Checks of the device and thread arguments, shared by every command that computes.

They sit at the bottom of the layers (beside `alloy.errors`) so that the merge, the LoRA
commands and the analysis can check a ``device`` or ``workers`` argument the same way.
"""

from __future__ import annotations

import re

import torch

from alloy.errors import DeviceError, UsageError

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def check_device(device: str, option: str = "--device") -> str:
    """``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``mps``) when torch can use it; else a
    `DeviceError` naming the argument and its command-line ``option``."""
    where = f"device (`{option}`) {device!r}"
    if device == "cpu":
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"{where} was asked for, but torch sees no MPS device; use cpu.")
        return device
    index = _CUDA_INDEX.fullmatch(device)
    if device != "cuda" and index is None:
        raise DeviceError(f"unknown device {device!r} (`{option}`): use cpu, cuda, cuda:N or mps.")
    if not torch.cuda.is_available():
        raise DeviceError(f"{where} was asked for, but torch sees no CUDA device; use cpu.")
    count = torch.cuda.device_count()
    if index is not None and int(index.group(1)) >= count:
        raise DeviceError(
            f"{where} was asked for, but torch sees {count} CUDA device"
            f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})."
        )
    return device


def check_count(value: int | None, name: str, option: str) -> int | None:
    """``value`` (a number of threads or workers; None means the default) when it is at least
    1; else a `UsageError` naming the argument ``name`` and its command-line ``option``."""
    if value is not None and value < 1:
        raise UsageError(f"{name} (`{option}`) must be at least 1, got {value}.")
    return value
