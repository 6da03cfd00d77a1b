"""The comparison rules: ratio per metric direction, flags exactly at their thresholds."""

from __future__ import annotations

import math

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
