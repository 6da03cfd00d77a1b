"""The results file: the environment (platform, package versions, git commit) and the JSON."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import psutil
import torch
from settings import REPO_DIR, RESULTS_DIR


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, object]:
    def git(*cmd: str) -> str:
        result = subprocess.run(
            ["git", *cmd], cwd=REPO_DIR, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def environment() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "versions": {
            "torch": torch.__version__,
            "safetensors": package_version("safetensors"),
            "mergekit": package_version("mergekit"),
            "alloy-merge": package_version("alloy-merge"),
        },
        "git": git_state(),
    }


def write_results(payload: dict[str, object]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{payload['timestamp']}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
