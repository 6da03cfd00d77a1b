"""Shared fixtures: tiny real checkpoints built once per session, never downloaded.

`llama_models`: fp32, untied lm_head; base in 3 safetensors shards, ft1 one file, ft2 2 shards.
`qwen2_models`: bf16, tied embeddings, q/k/v biases; base in 2 shards, ft1 one file, ft2 2 shards.
`make_model`: the factory of `tests/checkpoints.py`, for tests that need other layouts or kinds
(llama, qwen2, mistral, gemma, phi3, gpt2, gpt_neox, bert; safetensors or .bin; sharded or not).
"""

from __future__ import annotations

import os
import signal

import pytest
from cores import worker_cores

# Before torch or numba is imported (here or in a child process): their thread pools read these.
if "PYTEST_XDIST_WORKER" in os.environ:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, str(worker_cores()))

# No test touches the network or a model hub: make any attempt fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# A shell that starts the suite in the background (`cmd &` without job control) sets SIGINT to
# "ignore", which every child inherits, so the Ctrl-C tests would see no KeyboardInterrupt.
# Python's own handler here also gives the children of this process the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from checkpoints import MakeModel, ModelSet, make_model_set
from checkpoints import make_model as _make_model


@pytest.fixture(scope="session")
def llama_models(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    """Tiny llama, fp32, untied lm_head: `.base` (3 shards), `.ft1` (1 file), `.ft2` (2 shards)."""
    return make_model_set(tmp_path_factory.mktemp("llama"), "llama", "float32", base_shards=3)


@pytest.fixture(scope="session")
def qwen2_models(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    """Tiny qwen2, bf16, tied embeddings, q/k/v biases: `.base` (2 shards), `.ft1`, `.ft2`."""
    return make_model_set(tmp_path_factory.mktemp("qwen2"), "qwen2", "bfloat16", base_shards=2)


@pytest.fixture(scope="session")
def make_model() -> MakeModel:
    """The factory `make_model(kind, path, *, seed, dtype, shards, fmt, base, delta_scale)`."""
    return _make_model


# The two end-to-end demos take most of the suite's time: the real one runs first, the tiny one
# last, so that with `--dist worksteal` they start on different workers (each worker takes its
# half of the list in order) and the rest of the suite fills the other worker's time.
FIRST = "tests/demo/test_real_demo.py::test_small_real_demo_keeps_both_skills"
LAST = "tests/demo/test_demo.py::test_small_demo_merges_keep_both_skills"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {FIRST: -1, LAST: 1}
    items.sort(key=lambda item: rank.get(item.nodeid, 0))  # stable: the rest keep their order
