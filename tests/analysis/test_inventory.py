"""`alloy inventory`: origin, declared base, parameters, dtypes, hashes, domain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from checkpoints import write_weights
from click.testing import CliRunner
from safetensors import safe_open
from tiny import tiny_tensors, write_tiny

from alloy.analysis.inventory import inventory
from alloy.cli import main
from alloy.errors import UsageError

# embedding 10x4 + 3 layers x (q 4x4 + up 8x4 + norm 4) + norm 4 + head 10x4
TINY_PARAMS = 40 + 3 * (16 + 32 + 4) + 4 + 40


def _reference_hash(path: Path) -> str:
    """An independent reading of the documented content hash: every tensor of every
    safetensors file, in name order, framed as name, dtype, shape, then its bytes."""
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():  # noqa: SIM118
                tensors[k] = st.get_tensor(k)
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{str(t.dtype)[6:]}\0{list(t.shape)}\0".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_record_fields(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0, dtype=torch.bfloat16, config={"_name_or_path": "org/base-7b"})
    (tmp_path / "a" / "README.md").write_text(
        "---\ntags: [merge, code, transformers]\ndatasets: [org/code-instruct]\n---\n# A\n"
    )
    (rec,) = inventory([str(tmp_path / "a")])
    assert rec.parameters == TINY_PARAMS and rec.tensors == 12 and rec.layers == 3
    assert rec.dtypes == {"bfloat16": TINY_PARAMS} and rec.bytes == 2 * TINY_PARAMS
    assert rec.declared_base == "org/base-7b" and rec.declared_by == "config._name_or_path"
    assert rec.domain == "org/code-instruct" and rec.domain_from == "card.datasets"
    assert rec.model_type == "llama" and rec.architectures == ["LlamaForCausalLM"]
    assert rec.hub_id is None and rec.path == str((tmp_path / "a").resolve())
    assert rec.content_hash == _reference_hash(tmp_path / "a")
    d = rec.to_dict()
    assert json.loads(json.dumps(d)) == d and d["parameters"] == TINY_PARAMS


def test_content_hash_ignores_sharding_and_sees_one_changed_value(tmp_path: Path) -> None:
    t = write_tiny(tmp_path / "one", 0)
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "config.json").write_text(
        (tmp_path / "one" / "config.json").read_text()
    )
    write_weights(t, tmp_path / "sharded", shards=3)
    changed = dict(t)
    changed["model.norm.weight"] = t["model.norm.weight"].clone()
    changed["model.norm.weight"][2] += 1e-6
    write_tiny(tmp_path / "changed", 0, tensors=changed)
    one, sharded, other = inventory([str(tmp_path / n) for n in ("one", "sharded", "changed")])
    assert one.content_hash == sharded.content_hash != other.content_hash
    assert one.architecture_hash == sharded.architecture_hash == other.architecture_hash


def test_large_tensors_hash_in_row_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny(tmp_path / "a", 0)
    whole = inventory([str(tmp_path / "a")])[0].content_hash
    monkeypatch.setattr("alloy.analysis.inventory.HASH_CHUNK_BYTES", 40)  # 2-row pieces
    assert inventory([str(tmp_path / "a")])[0].content_hash == whole


def test_declared_base_from_adapter_and_card_and_domain_from_label_or_tags(tmp_path: Path) -> None:
    write_tiny(tmp_path / "ad", 0)
    (tmp_path / "ad" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "org/base", "peft_type": "LORA"})
    )
    write_tiny(tmp_path / "card", 1)
    (tmp_path / "card" / "README.md").write_text(
        "---\nbase_model: org/llama\ntags: [merge, medical, license:mit]\n---\ntext\n"
    )
    ad, card = inventory([str(tmp_path / "ad"), str(tmp_path / "card")], hash_weights=False)
    assert (ad.declared_base, ad.declared_by) == (
        "org/base",
        "adapter_config.base_model_name_or_path",
    )
    assert (card.declared_base, card.declared_by) == ("org/llama", "card.base_model")
    assert (card.domain, card.domain_from) == ("medical", "card.tags")
    assert ad.domain is None and ad.content_hash is None
    (labelled,) = inventory([str(tmp_path / "card")], labels=["radiology"], hash_weights=False)
    assert (labelled.domain, labelled.domain_from) == ("radiology", "label")
    with pytest.raises(UsageError, match=r"2 labels \(`--label`\) for 1 models"):
        inventory([str(tmp_path / "card")], labels=["a", "b"])


def test_hub_models_from_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    snap = cache / "models--org--tiny" / "snapshots" / "abc123"
    write_tiny(snap, 1)
    (cache / "models--org--tiny" / "refs").mkdir(parents=True)
    (cache / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    (rec,) = inventory(["org/tiny@abc123"], hash_weights=False)
    assert rec.hub_id == "org/tiny" and rec.revision == "abc123" and rec.ref == "org/tiny@abc123"


def test_inventory_command(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0)
    write_tiny(tmp_path / "b", 1, tensors=tiny_tensors(1, layers=2), layers=2)
    r = CliRunner().invoke(
        main, ["inventory", "--json", "--label", "chat", str(tmp_path / "a"), str(tmp_path / "b")]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert [d["domain"] for d in data] == ["chat", None]
    assert data[0]["content_hash"] == _reference_hash(tmp_path / "a")
    assert data[1]["parameters"] == TINY_PARAMS - 52
    r2 = CliRunner().invoke(
        main, ["inventory", "--no-hash", str(tmp_path / "a"), str(tmp_path / "b")]
    )
    assert r2.exit_code == 0, r2.output
    assert "content hash:  - (not computed)" in r2.output and f"{TINY_PARAMS:,} in 12" in r2.output
    assert "2 different architecture hashes: run `alloy check`" in r2.output
    assert CliRunner().invoke(main, ["inventory", str(tmp_path / "missing")]).exit_code == 2
