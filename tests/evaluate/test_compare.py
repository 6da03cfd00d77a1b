"""The comparison rules: ratio per metric direction, flags exactly at their thresholds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alloy.evaluate.compare import compare_row, flag, ratio


@pytest.mark.parametrize(
    ("merged", "best", "expected"),
    [
        (10.0, 10.0, "ok"),
        (9.0, 10.0, "ok"),  # better than every source
        (11.0, 10.0, "ok"),  # exactly 10% worse: not more than 10%
        (11.00001, 10.0, "degraded"),
        (15.0, 10.0, "degraded"),
        (20.0, 10.0, "degraded"),  # exactly 2x: not more than 2x
        (20.00001, 10.0, "failed"),
        (100.0, 10.0, "failed"),
    ],
)
def test_lower_is_better_thresholds(merged: float, best: float, expected: str) -> None:
    r = ratio(merged, best, "lower")
    assert r == pytest.approx(merged / best)
    assert flag(r) == expected


@pytest.mark.parametrize(
    ("merged", "best", "expected"),
    [
        (0.9, 0.9, "ok"),
        (1.0, 0.9, "ok"),
        (0.8, 0.88, "ok"),  # 0.88 / 0.8 = 1.1 (up to rounding): exactly at the threshold
        (0.79, 0.88, "degraded"),
        (0.5, 1.0, "degraded"),  # exactly 2x
        (0.4999, 1.0, "failed"),
        (0.0, 0.25, "failed"),  # a skill every source shows, lost entirely
    ],
)
def test_higher_is_better_thresholds(merged: float, best: float, expected: str) -> None:
    r = ratio(merged, best, "higher")
    assert r == (math.inf if merged == 0 else pytest.approx(best / merged))
    assert flag(r) == expected


def test_undefined_ratio_is_not_flagged() -> None:
    assert ratio(0.0, 0.0, "higher") is None  # no source has the skill
    assert ratio(math.nan, 3.0, "lower") is None
    row = compare_row("tools", "json", "higher", {"a": 0.0, "b": 0.0}, "m", 0.0)
    assert (row.flag, row.best_source, row.ratio, row.suggestion) == ("n/a", None, None, None)


def test_row_picks_the_best_source_per_direction() -> None:
    low = compare_row("persona", "perplexity", "lower", {"a": 4.0, "b": 2.0}, "m", 2.5)
    assert (low.best_source, low.ratio, low.flag) == ("b", 1.25, "degraded")
    assert "25% worse than b" in (low.suggestion or "") and "weight" in (low.suggestion or "")
    high = compare_row("tools", "name", "higher", {"a": 0.8, "b": 0.2}, "m", 0.3, "ties")
    assert (high.best_source, high.flag) == ("a", "failed")
    assert high.ratio == pytest.approx(0.8 / 0.3)
    assert "retrain" in (high.suggestion or "") and "dare_ties" in (high.suggestion or "")
    assert high.values == {"a": 0.8, "b": 0.2, "m": 0.3}
    ok = compare_row("general", "perplexity", "lower", {"a": 4.0}, "m", 3.0)
    assert ok.flag == "ok" and ok.suggestion is None


def test_rows_round_trip_through_json() -> None:
    from alloy.evaluate.compare import Row

    row = compare_row("tools", "json", "higher", {"a": 0.5, "b": math.nan}, "m", 0.0)
    d = row.to_dict()
    assert d["ratio"] == "inf" and d["values"]["b"] is None
    back = Row.from_dict(d)
    assert back.ratio == math.inf and back.flag == "failed" and math.isnan(back.values["b"])


def test_compare_measurements_of_models_measured_apart(tmp_path: Path) -> None:
    """Models measured once each (as the demo does for many merges sharing their sources)
    compare like `evaluate_models`: the best source per set, its ratio and flag."""
    from alloy.errors import EvaluationError
    from alloy.evaluate.data import DataSet, Document, Probe, ProbeSet
    from alloy.evaluate.models import EvalOptions
    from alloy.evaluate.run import EvalSets, ModelMeasurement, compare_measurements

    sets = EvalSets(
        [DataSet("persona", tmp_path / "p.jsonl", [Document(text="hi")])],
        [ProbeSet("tools", "tool-calls", tmp_path / "t.jsonl", [Probe("x", None, {"name": "f"})])],
    )

    def m(ppl: float, js: float) -> ModelMeasurement:
        tool = {"json": js, "name": js, "arguments": js, "exact": js}
        return ModelMeasurement(
            {("persona", "perplexity"): ppl, **{("tools", k): v for k, v in tool.items()}},
            {"persona": 7},
            {"tools": [{"prompt": "x", "output": "{}"}]},
        )

    measured = {
        "base": m(6.0, 0.0),
        "persona": m(1.5, 0.0),
        "tools": m(5.0, 0.8),
        "ties": m(1.8, 0.6),
    }
    sources = [("base", tmp_path / "b"), ("persona", tmp_path / "p"), ("tools", tmp_path / "t")]
    ev = compare_measurements(
        ("ties", tmp_path / "m"), sources, sets, measured, EvalOptions(), 1.5, method="ties"
    )
    rows = {(r.set, r.metric): r for r in ev.rows}
    assert len(rows) == 5  # perplexity + json, name, arguments, exact
    ppl = rows[("persona", "perplexity")]
    assert (ppl.best_source, ppl.flag) == ("persona", "degraded")
    assert ppl.ratio == pytest.approx(1.8 / 1.5)
    js = rows[("tools", "json")]
    assert (js.best_source, js.flag, js.values["ties"]) == ("tools", "degraded", 0.6)
    assert js.ratio == pytest.approx(0.8 / 0.6)
    assert ev.tokens == {"persona": {"base": 7, "persona": 7, "tools": 7, "ties": 7}}
    assert [x.role for x in ev.models] == ["source", "source", "source", "merged"]
    del measured["tools"]
    with pytest.raises(EvaluationError, match="no measurement of tools"):
        compare_measurements(("ties", tmp_path / "m"), sources, sets, measured, EvalOptions(), 0.0)
