from __future__ import annotations

import pytest

from .search_family import Family, make_family


@pytest.fixture(scope="session")
def skill_family(tmp_path_factory: pytest.TempPathFactory) -> Family:
    """A tiny base and two fine-tunes, each trained on its own word patterns."""
    return make_family(tmp_path_factory.mktemp("skills"))
