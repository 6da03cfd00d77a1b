"""End-to-end merges on raw tiny checkpoints: output layout, files, determinism, semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny import read_dir, tiny_tensors, write_tiny

import alloy
from alloy.errors import ConfigError
from alloy.plan import executor


@pytest.fixture
def three(tmp_path: Path) -> tuple[Path, Path, Path]:
    base = tmp_path / "base"
    write_tiny(base, 0)
    ts = tiny_tensors(0)
    for i, name in enumerate(("ft1", "ft2")):
        g = torch.Generator().manual_seed(10 + i)
        write_tiny(
            tmp_path / name,
            0,
            tensors={k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in ts.items()},
        )
    return base, tmp_path / "ft1", tmp_path / "ft2"


def _ta(base: Path, a: Path, b: Path, **extra: object) -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 1.0}},
            {"model": str(b), "parameters": {"weight": 0.5}},
        ],
        **extra,
    }


def test_output_files_and_card(three: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, a, b = three
    res = alloy.merge(_ta(base, a, b, name="combo"), tmp_path / "out")
    out = res.out_dir
    assert res.files == sorted(
        [
            "README.md",
            "alloy_config.yml",
            "config.json",
            "generation_config.json",
            "mergekit_config.yml",
            "model.safetensors",
            "report-task-vectors.png",
            "report.json",
            "report.md",
            "sources.json",
            "tokenizer_config.json",
        ]
    )
    sources = json.loads((out / "sources.json").read_text())["sources"]
    assert [s["path"] for s in sources] == [str(p.resolve()) for p in (base, a, b)]
    # embedding 10x4 + 3 layers x (q 4x4 + up 8x4 + norm 4) + norm 4 + head 10x4
    assert {s["parameters"] for s in sources} == {40 + 3 * (16 + 32 + 4) + 4 + 40}
    assert sources[0]["dtypes"] == {"float32": 240} and sources[0]["content_hash"] is None
    assert len({s["architecture_hash"] for s in sources}) == 1
    card = (out / "README.md").read_text()
    assert "`sources.json`" in card
    front = yaml.safe_load(card.split("---")[1])
    assert front["tags"] == ["merge", "alloy"] and front["library_name"] == "transformers"
    assert str(base) in front["base_model"]
    assert "task_arithmetic" in card and "```yaml" in card
    assert yaml.safe_load((out / "mergekit_config.yml").read_text())["merge_method"] == (
        "task_arithmetic"
    )
    # the resolved config can be merged again and gives the same weights
    again = alloy.merge(out / "alloy_config.yml", tmp_path / "again")
    assert (again.out_dir / "model.safetensors").read_bytes() == (
        out / "model.safetensors"
    ).read_bytes()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32" and cfg["num_hidden_layers"] == 3


def test_math_of_task_arithmetic(three: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, a, b = three
    alloy.merge(_ta(base, a, b, parameters={"lambda": 0.5}), tmp_path / "out")
    got = read_dir(tmp_path / "out")
    tb, ta_, tb2 = read_dir(base), read_dir(a), read_dir(b)
    for k in tb:
        expected = tb[k] + 0.5 * (1.0 * (ta_[k] - tb[k]) + 0.5 * (tb2[k] - tb[k]))
        torch.testing.assert_close(got[k], expected, rtol=1e-6, atol=1e-6)


def test_deterministic_byte_identical(three: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, a, b = three
    cfg = {
        "merge_method": "dare_ties",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(b), "parameters": {"weight": 1.0, "density": 0.5}},
        ],
    }
    r1, r2 = tmp_path / "run1" / "merged", tmp_path / "run2" / "merged"
    alloy.merge(cfg, r1, random_seed=7, out_shard_size=200)
    alloy.merge(cfg, r2, random_seed=7, out_shard_size=200)
    files = sorted(p.name for p in r1.iterdir())
    assert "model.safetensors.index.json" in files and len(files) > 8
    # the report records this run's wall time and peak memory; everything else is identical
    for f in (f for f in files if f not in ("report.json", "report.md")):
        assert (r1 / f).read_bytes() == (r2 / f).read_bytes(), f
    rep1, rep2 = (json.loads((r / "report.json").read_text()) for r in (r1, r2))
    assert rep1.pop("run").keys() == rep2.pop("run").keys()
    assert json.dumps(rep1).replace(str(r1), "") == json.dumps(rep2).replace(str(r2), "")
    alloy.merge(cfg, tmp_path / "r3", random_seed=8, out_shard_size=200)
    assert read_dir(tmp_path / "r3")["lm_head.weight"].ne(read_dir(r1)["lm_head.weight"]).any()


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("task_arithmetic", {"weight": 1.0}),
        ("ties", {"weight": 1.0, "density": 0.3}),
        ("dare_ties", {"weight": 1.0, "density": 0.5}),
        ("breadcrumbs", {"weight": 1.0, "density": 0.5, "gamma": 0.1}),
    ],
)
@pytest.mark.parametrize("kernels", ["1", "0"])
def test_chunked_equals_whole(
    three: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    params: dict,
    kernels: str,
) -> None:
    """Streamed methods give the same bytes whether a tensor is one chunk or many, with the
    fused CPU kernels or the torch code."""
    monkeypatch.setenv("ALLOY_KERNELS", kernels)
    base, a, b = three
    cfg = _ta(base, a, b, merge_method=method)
    for m in cfg["models"]:
        m["parameters"] = {**params, "weight": m["parameters"]["weight"]}
    alloy.merge(cfg, tmp_path / "whole", random_seed=3)
    monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 12)  # forces row chunks of 3 rows
    assert executor.row_chunks((10, 4), 12) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert executor.row_chunks((10, 4)) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    alloy.merge(cfg, tmp_path / "chunked", random_seed=3)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (
        tmp_path / "chunked" / "model.safetensors"
    ).read_bytes()


def test_tensors_too_large_to_hold_are_read_again_for_every_pass(
    three: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, a, b = three
    cfg = _ta(base, a, b, merge_method="ties")
    for m in cfg["models"]:
        m["parameters"]["density"] = 0.4
    alloy.merge(cfg, tmp_path / "held")
    monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 12)
    monkeypatch.setattr(executor, "HOLD_BYTES", 1)  # every tensor: "lazy", chunks re-read
    reads: list[tuple[int, int] | None] = []
    real = executor.Executor._read

    def counting(self: executor.Executor, ref: object, rows: tuple[int, int] | None) -> object:
        reads.append(rows)
        return real(self, ref, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(executor.Executor, "_read", counting)
    alloy.merge(cfg, tmp_path / "lazy")
    assert (tmp_path / "held" / "model.safetensors").read_bytes() == (
        tmp_path / "lazy" / "model.safetensors"
    ).read_bytes()
    # sample, count and apply passes each read every chunk of every input
    assert reads.count((0, 3)) >= 3 * 3


def test_slerp_chunked_equals_whole(
    three: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, a, _ = three
    cfg = {
        "merge_method": "slerp",
        "base_model": str(base),
        "models": [{"model": str(base)}, {"model": str(a)}],
        "parameters": {"t": 0.4},
    }
    alloy.merge(cfg, tmp_path / "whole")
    monkeypatch.setattr(executor, "CHUNK_ELEMENTS", 12)
    alloy.merge(cfg, tmp_path / "chunked")
    whole, chunked = read_dir(tmp_path / "whole"), read_dir(tmp_path / "chunked")
    for name, t in whole.items():  # the angle's sums are ordered differently: within rounding
        torch.testing.assert_close(chunked[name], t, rtol=1e-6, atol=1e-7)


def test_no_copy_tokenizer_and_dtype(three: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, a, b = three
    res = alloy.merge(_ta(base, a, b, out_dtype="bfloat16"), tmp_path / "out", copy_tokenizer=False)
    assert "tokenizer_config.json" not in res.files and "generation_config.json" not in res.files
    got = read_dir(res.out_dir)
    assert all(v.dtype == torch.bfloat16 for v in got.values())
    assert json.loads((res.out_dir / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_same_model_twice_is_two_inputs(three: tuple[Path, Path, Path], tmp_path: Path) -> None:
    # mergekit collapses repeated models into one input (its issue #214)
    base, a, _ = three
    res = alloy.merge(_ta(base, a, a), tmp_path / "out")
    assert any("listed again" in n for n in res.notes)
    got, tb, ta_ = read_dir(res.out_dir), read_dir(base), read_dir(a)
    for k in tb:
        torch.testing.assert_close(got[k], tb[k] + 1.5 * (ta_[k] - tb[k]), rtol=1e-6, atol=1e-6)


def test_linear_with_unlisted_base_ignores_it(
    three: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    # mergekit adds the base as an input without a weight and crashes
    base, a, b = three
    cfg = {
        "merge_method": "linear",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 1.0}},
            {"model": str(b), "parameters": {"weight": 3.0}},
        ],
    }
    res = alloy.merge(cfg, tmp_path / "out")
    assert any("does not use a base model" in n for n in res.notes)
    got, ta_, tb2 = read_dir(res.out_dir), read_dir(a), read_dir(b)
    for k in ta_:
        torch.testing.assert_close(got[k], (ta_[k] + 3 * tb2[k]) / 4, rtol=1e-6, atol=1e-6)


def test_slerp_over_three_models_switches_with_warning(
    three: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    base, a, b = three
    cfg = {
        "merge_method": "slerp",
        "base_model": str(base),
        "models": [{"model": str(base)}, {"model": str(a)}, {"model": str(b)}],
        "parameters": {"t": 0.5},
    }
    res = alloy.merge(cfg, tmp_path / "out")
    assert res.method == "ties" and "switches to ties" in res.notes[0]
    assert "ties" in (res.out_dir / "README.md").read_text()
    with pytest.raises(ConfigError, match="--strict"):
        alloy.merge(cfg, tmp_path / "strict", strict=True)
    no_base = {k: v for k, v in cfg.items() if k != "base_model"}
    res2 = alloy.merge(no_base, tmp_path / "multi")
    assert res2.method == "multislerp"


def test_tied_and_untied_inputs(tmp_path: Path) -> None:
    # a tied model contributes its embedding as the head; the output stores the head
    tied = tmp_path / "tied"
    write_tiny(tied, 0, tied=True)
    untied = tmp_path / "untied"
    tu = write_tiny(untied, 1)
    tt = tiny_tensors(0, tied=True)
    cfg = {
        "merge_method": "linear",
        "models": [
            {"model": str(tied), "parameters": {"weight": 0.5}},
            {"model": str(untied), "parameters": {"weight": 0.5}},
        ],
    }
    res = alloy.merge(cfg, tmp_path / "out")
    got = read_dir(res.out_dir)
    expected = 0.5 * tt["model.embed_tokens.weight"] + 0.5 * tu["lm_head.weight"]
    torch.testing.assert_close(got["lm_head.weight"], expected)
    assert json.loads((res.out_dir / "config.json").read_text())["tie_word_embeddings"] is False
    # two tied models stay tied
    write_tiny(tmp_path / "tied2", 2, tied=True)
    cfg["models"][1]["model"] = str(tmp_path / "tied2")
    res2 = alloy.merge(cfg, tmp_path / "out2")
    assert "lm_head.weight" not in read_dir(res2.out_dir)
    assert json.loads((res2.out_dir / "config.json").read_text())["tie_word_embeddings"] is True


def test_frankenmerge_config_layers(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ta = write_tiny(a, 0, layers=4, config={"layer_types": ["s", "f", "s", "f"]})
    cfg = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(a), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(a), "layer_range": [1, 4]}]},
        ],
    }
    res = alloy.merge(cfg, tmp_path / "out")
    out_cfg = json.loads((res.out_dir / "config.json").read_text())
    assert out_cfg["num_hidden_layers"] == 6
    assert out_cfg["layer_types"] == ["s", "f", "s", "f", "s", "f"]
    got = read_dir(res.out_dir)
    # output layer 3 is source layer 1 (start of the second slice)
    assert torch.equal(
        got["model.layers.3.mlp.up_proj.weight"], ta["model.layers.1.mlp.up_proj.weight"]
    )
    assert torch.equal(
        got["model.layers.5.mlp.up_proj.weight"], ta["model.layers.3.mlp.up_proj.weight"]
    )
    assert len([k for k in got if k.endswith("up_proj.weight")]) == 6


def test_out_of_range_layers(tmp_path: Path) -> None:
    write_tiny(tmp_path / "a", 0, layers=3)
    cfg = {
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(tmp_path / "a"), "layer_range": [2, 5]}]}],
    }
    with pytest.raises(alloy.IncompatibleModelsError, match=r"\[2, 5\] is out of range.*3 layers"):
        alloy.merge(cfg, tmp_path / "out")


def test_gradient_restarts_per_slice(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tiny(a, 0, layers=4)
    write_tiny(b, 1, layers=4)
    cfg = {
        "merge_method": "linear",
        "slices": [
            {
                "sources": [
                    {"model": str(a), "layer_range": [0, 2], "parameters": {"weight": [1.0, 0.0]}},
                    {"model": str(b), "layer_range": [0, 2], "parameters": {"weight": [0.0, 1.0]}},
                ]
            },
            {
                "sources": [
                    {"model": str(a), "layer_range": [2, 4], "parameters": {"weight": [1.0, 0.0]}},
                    {"model": str(b), "layer_range": [2, 4], "parameters": {"weight": [0.0, 1.0]}},
                ]
            },
        ],
    }
    p = alloy.plan(cfg)
    ts = {j.name: j.t for j in p.jobs}
    w = {j.name: [m.weight for m in j.model_params] for j in p.jobs}  # type: ignore[attr-defined]
    assert ts["model.layers.0.mlp.up_proj.weight"] == 0.0
    assert ts["model.layers.1.mlp.up_proj.weight"] == 1.0
    assert ts["model.layers.2.mlp.up_proj.weight"] == 0.0  # restarts in the second slice
    assert w["model.layers.3.mlp.up_proj.weight"] == [0.0, 1.0]
    assert w["model.embed_tokens.weight"] == [1.0, 0.0]  # before the layers: t = 0
    assert w["model.norm.weight"] == [1.0, 0.0]  # after the layers: t = 0 too (mergekit 0.1.5)


def test_config_donor_is_first_listed_model(tmp_path: Path) -> None:
    # mergekit picks the donor from an unordered set when there is no base (its issue #640)
    write_tiny(tmp_path / "a", 0, config={"marker": "a"})
    write_tiny(tmp_path / "b", 1, config={"marker": "b"})
    for first, second in (("a", "b"), ("b", "a")):
        cfg = {
            "merge_method": "linear",
            "models": [
                {"model": str(tmp_path / first), "parameters": {"weight": 1.0}},
                {"model": str(tmp_path / second), "parameters": {"weight": 1.0}},
            ],
        }
        res = alloy.merge(cfg, tmp_path / f"out_{first}")
        assert json.loads((res.out_dir / "config.json").read_text())["marker"] == first


def test_slice_base_not_among_sources(three: tuple[Path, Path, Path], tmp_path: Path) -> None:
    # mergekit fails with "BaseModel not in input tensors" (its issue #643)
    base, a, b = three
    cfg = {
        "merge_method": "task_arithmetic",
        "slices": [
            {
                "sources": [
                    {"model": str(a), "layer_range": [0, 3], "parameters": {"weight": 1.0}},
                    {"model": str(b), "layer_range": [0, 3], "parameters": {"weight": 1.0}},
                ],
                "base_model": str(base),
            }
        ],
    }
    res = alloy.merge(cfg, tmp_path / "out")
    assert any("not among the sources" in n for n in res.notes)
    got, tb, ta_, tb2 = read_dir(res.out_dir), read_dir(base), read_dir(a), read_dir(b)
    for k in tb:
        torch.testing.assert_close(got[k], ta_[k] + tb2[k] - tb[k], rtol=1e-6, atol=1e-6)
