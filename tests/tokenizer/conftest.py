from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from vocab_models import VocabModels, build_vocab_models


@pytest.fixture(scope="session")
def vocab_models(tmp_path_factory: pytest.TempPathFactory) -> VocabModels:
    """Three tiny llamas whose BPE tokenizers differ (`tests/tokenizer/vocab_models.py`)."""
    return build_vocab_models(tmp_path_factory.mktemp("vocab"))
