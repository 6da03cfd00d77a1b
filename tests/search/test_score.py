"""Retention and the 10% rule, on values worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloy.errors import EvaluationError
from alloy.evaluate.data import DataSet
from alloy.evaluate.run import EvalSets
from alloy.search.score import score, skills_of

SETS = EvalSets(
    data=[DataSet("persona", Path("p.jsonl"), []), DataSet("tools", Path("t.jsonl"), [])]
)
SOURCES = {
    "base": {("persona", "perplexity"): 6.0, ("tools", "perplexity"): 4.0},
    "a": {("persona", "perplexity"): 2.0, ("tools", "perplexity"): 3.0},
    "b": {("persona", "perplexity"): 5.0, ("tools", "perplexity"): 1.0},
}


def test_retention_is_the_share_of_the_best_sources_gain() -> None:
    merged = {("persona", "perplexity"): 2.1, ("tools", "perplexity"): 1.05}
    s = score(SETS, SOURCES, "base", merged)
    assert s.retention == pytest.approx({"persona": 3.9 / 4.0, "tools": 2.95 / 3.0})
    assert s.min_retention == pytest.approx(3.9 / 4.0)
    assert s.feasible and s.violation == 0.0  # 2.1 / 2.0 = 1.05 and 1.05 / 1.0: under 1.10


def test_a_set_more_than_ten_percent_worse_than_the_best_source_is_degraded() -> None:
    merged = {("persona", "perplexity"): 3.0, ("tools", "perplexity"): 1.05}
    s = score(SETS, SOURCES, "base", merged)
    assert s.retention["persona"] == pytest.approx(0.75)  # (6 - 3) / (6 - 2)
    assert not s.feasible
    assert s.degraded == ["persona/perplexity (ratio 1.50)"]
    assert s.violation == pytest.approx(1.5 - 1.1)


def test_no_skill_without_a_source_better_than_the_reference() -> None:
    assert skills_of(SETS, SOURCES, "base") == ["persona", "tools"]
    assert skills_of(SETS, SOURCES, "b") == ["persona"]  # a beats b on persona only
    best = {"best": {k: 0.5 for k in SOURCES["a"]}, "a": SOURCES["a"]}
    with pytest.raises(EvaluationError, match="no source is better than the reference"):
        skills_of(SETS, best, "best")
