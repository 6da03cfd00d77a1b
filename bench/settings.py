"""Paths, methods, tools, sampled tensors and targets shared by the bench modules."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
CONFIG_DIR = BENCH_DIR / "configs"
WORK_DIR = BENCH_DIR / "work"
RESULTS_DIR = BENCH_DIR / "results"
BIN_DIR = Path(sys.executable).parent  # the venv's bin/, not resolved through the symlink

METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_ties", "tsv", "iso_c", "iso_cts")
TOOLS = ("alloy", "mergekit")
ALLOY_ONLY = frozenset({"tsv", "iso_c", "iso_cts"})  # no mergekit counterpart
REFERENCE_METHOD = "ties"  # what the Alloy-only methods are timed against
RANDOM_METHODS = frozenset({"dare_ties"})  # outputs differ by design; not compared
PLACEHOLDERS = ("base", "ft1", "ft2")
SAMPLED_TENSORS = (
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
)
# Alloy / mergekit ratios the project aims for.
RSS_TARGET = 0.4
TIME_TARGETS = {"linear": 0.5, "slerp": 0.5, "task_arithmetic": 0.5, "ties": 0.2, "dare_ties": 0.2}
# At the 7b scale: Alloy's peak RSS in absolute terms, and wall time against the I/O floor.
RSS_LIMIT_7B = 2 * 1024**3
FLOOR_TARGETS = {"linear": 1.3, "ties": 1.3}
LOG_TAIL_CHARS = 2000
GIB = 1024**3
