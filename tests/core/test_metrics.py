"""Continual-learning metrics on a hand-made accuracy matrix."""

import numpy as np
import pytest

from bnncl.core.metrics import accuracy_matrix, backward_transfer, first_seen, forgetting, per_class_accuracy

nan = np.nan

# 3 experiences x 6 classes. Class 0, 1 learned in experience 0, class 2 in 1, class 3 in 2 (the last),
# class 4 never trained (but tested), class 5 trained in 0 but has no test pattern (NaN column).
MATRIX = np.array([
    [0.8, 0.6, 0.0, 0.0, 0.1, nan],
    [0.5, 0.7, 0.9, 0.0, 0.2, nan],
    [0.4, 0.65, 0.6, 0.9, 0.3, nan],
])
SEEN = np.array([0, 0, 1, 2, -1, 0])


def test_forgetting_by_hand():
    # Counted: classes first seen before the last experience with a final accuracy: 0, 1, 2.
    # class 0: max(0.8, 0.5) - 0.4 = 0.4 ; class 1: max(0.6, 0.7) - 0.65 = 0.05 ; class 2: max(0.9) - 0.6 = 0.3
    expected = (0.4 + 0.05 + 0.3) / 3
    assert forgetting(MATRIX, SEEN) == pytest.approx(expected, rel=1e-12)
    assert forgetting(MATRIX, SEEN) == pytest.approx(0.25, rel=1e-12)


def test_backward_transfer_by_hand():
    # class 0: 0.4 - 0.8 ; class 1: 0.65 - 0.6 ; class 2: 0.6 - 0.9
    expected = ((0.4 - 0.8) + (0.65 - 0.6) + (0.6 - 0.9)) / 3
    assert backward_transfer(MATRIX, SEEN) == pytest.approx(expected, rel=1e-12)
    assert backward_transfer(MATRIX, SEEN) == pytest.approx(-0.65 / 3, rel=1e-12)


def test_forgetting_uses_the_best_before_the_end_and_ignores_nan_midway():
    m = np.array([[0.2, 0.5], [nan, 0.9], [0.7, 0.1], [0.3, 0.1]])
    seen = np.array([0, 1])
    # class 0: nanmax(0.2, nan, 0.7) - 0.3 = 0.4 ; class 1: max(0.9, 0.1) - 0.1 = 0.8 (row 0 is before it was learned)
    assert forgetting(m, seen) == pytest.approx((0.4 + 0.8) / 2, rel=1e-12)
    # BWT: class 0: 0.3 - 0.2 ; class 1: 0.1 - 0.9
    assert backward_transfer(m, seen) == pytest.approx(((0.3 - 0.2) + (0.1 - 0.9)) / 2, rel=1e-12)


def test_improvement_gives_negative_forgetting():
    m = np.array([[0.5, 0.0], [0.9, 0.8]])
    seen = np.array([0, 1])
    # class 0 improved after it was learned: best before the end = 0.5, final 0.9 -> drop -0.4
    assert forgetting(m, seen) == pytest.approx(-0.4, rel=1e-12)
    assert backward_transfer(m, seen) == pytest.approx(0.4, rel=1e-12)


def test_single_experience_or_nothing_learned_before_last_is_zero():
    assert forgetting(MATRIX[:1], SEEN) == 0.0
    assert backward_transfer(MATRIX[:1], SEEN) == 0.0
    only_last = np.array([2, 2, 2, 2, -1, 2])
    assert forgetting(MATRIX, only_last) == 0.0
    assert backward_transfer(MATRIX, only_last) == 0.0


def test_per_class_accuracy_against_loop():
    rng = np.random.default_rng(0)
    k = 6
    y_true = rng.integers(0, k - 1, 200)  # class 5 never in the test labels
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, k, 200))
    got = per_class_accuracy(y_true, y_pred, k)
    assert got.shape == (k,)
    for c in range(k):
        n = sum(1 for t in y_true if t == c)
        hit = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        if n == 0:
            assert np.isnan(got[c])
        else:
            assert got[c] == pytest.approx(hit / n, rel=1e-15)
    assert np.isnan(got[5])


def test_per_class_accuracy_small_by_hand():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 2, 1, 0])
    np.testing.assert_allclose(per_class_accuracy(y_true, y_pred, 4)[:3], [1 / 2, 2 / 3, 0.0], rtol=1e-15)
    assert np.isnan(per_class_accuracy(y_true, y_pred, 4)[3])


def test_first_seen():
    got = first_seen([[2, 3], [0, 3], [1], [0]], 5)
    np.testing.assert_array_equal(got, [1, 2, 0, 0, -1])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(first_seen([], 3), [-1, -1, -1])


def test_accuracy_matrix_stacks_rows():
    m = accuracy_matrix([np.array([1, 0]), [0.5, nan]])
    assert m.shape == (2, 2) and m.dtype == np.float64
    assert m[0, 0] == 1.0 and m[1, 0] == 0.5 and np.isnan(m[1, 1])
