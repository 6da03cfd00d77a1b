"""How a model reference that is not local resolves when the hub refuses or cannot be reached.

No network: ``snapshot_download`` is replaced by a function that raises what the hub raises.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

from alloy.config.schema import ModelRef
from alloy.errors import ModelNotFoundError
from alloy.io.hub import resolve_model


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _hub_error(kind: type[Exception], status: int) -> Exception:
    url = "https://huggingface.co/api/models/org/model/revision/v2"
    response = httpx2.Response(status, request=httpx2.Request("GET", url))
    return kind(f"{status} from the hub", response=response)


def _raising(error: Exception):  # type: ignore[no-untyped-def]
    def snapshot_download(*args: object, **kwargs: object) -> str:
        raise error

    return snapshot_download


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (_hub_error(GatedRepoError, 403), "gated"),
        (_hub_error(RevisionNotFoundError, 404), "no revision 'v2'"),
        (_hub_error(RepositoryNotFoundError, 401), "private"),
        (ConnectionError("Name or service not known"), "Name or service not known"),
        (TimeoutError("read timed out"), "downloading it failed: TimeoutError"),
    ],
)
def test_a_refusal_or_an_outage_is_not_reported_as_a_missing_model(
    online: pytest.MonkeyPatch, error: Exception, says: str
) -> None:
    online.setattr(huggingface_hub, "snapshot_download", _raising(error))
    with pytest.raises(ModelNotFoundError, match=says) as info:
        resolve_model(ModelRef("org/model", "v2"))
    assert info.value.__cause__ is error


def test_offline_a_model_not_in_the_cache_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raising(AssertionError("called")))
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache") as info:
        resolve_model(ModelRef("org/model-that-is-nowhere"))
    assert info.value.__cause__ is None
