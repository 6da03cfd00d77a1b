"""The analysis kernels: the task-vector pass writes what `PassTotals` names, and the Gram
matrix is the inputs' dot products (worked by hand on small arrays)."""

from __future__ import annotations

import numpy as np

from alloy.kernels.fused.analysis import gram, pass_totals, task_vector_pass


def test_the_task_vector_pass_fills_the_named_totals() -> None:
    base = np.array([1.0, 2.0, 0.0, -1.0, 5.0], np.float32)
    x1 = np.array([2.0, 2.0, 3.0, -1.0, 4.0], np.float32)  # δ1 = 1, 0, 3, 0, -1
    x2 = np.array([0.0, 4.0, 1.0, 1.0, 5.0], np.float32)  # δ2 = -1, 2, 1, 2, 0
    n, nk, m = 2, 1, base.size
    # one rank, everything kept (hi = -inf); no open bracket groups (glo > ghi)
    lo = np.full((n, nk), -np.inf, np.float32)
    hi = np.full((n, nk), -np.inf, np.float32)
    glo = np.full((n, 1), np.inf, np.float32)
    ghi = np.full((n, 1), -np.inf, np.float32)
    totals = pass_totals(n, nk)
    where = np.empty((n, 1, m + 1), np.int32)
    wmag = np.empty((n, 1, m + 1), np.float32)
    unsure = np.empty(m + 1, np.int32)
    udelta = np.empty((n, m + 1), np.float32)
    _, nu = task_vector_pass(
        (x1, x2), base, lo, hi, glo, ghi, 0, totals.sums, totals.counts, where, wmag, unsure, udelta
    )
    assert nu == 0  # every keep is certain
    assert totals.base_sq.tolist() == [1 + 4 + 0 + 1 + 25]
    assert totals.sq.tolist() == [1 + 9 + 1, 1 + 4 + 1 + 4]
    assert totals.dot.tolist() == [1 * -1 + 0 * 2 + 3 * 1 + 0 * 2 + -1 * 0]
    assert totals.above_sq.tolist() == [[11.0], [10.0]]  # everything is above -inf
    assert totals.changed.tolist() == [3, 4]
    assert totals.nonfinite.tolist() == [0, 0]
    assert totals.above.tolist() == [[5], [5]]
    # entries both keep nonzero: 0 (1, -1) and 2 (3, 1); of those with both signs: entry 0
    assert totals.overlap.tolist() == [2]
    assert totals.conflict.tolist() == [1]


def test_gram_is_the_matrix_of_dot_products() -> None:
    a = np.array([1.0, 2.0, 3.0], np.float32)
    b = np.array([0.0, -1.0, 4.0], np.float32)
    assert gram((a, b)).tolist() == [[14.0, 10.0], [10.0, 17.0]]
