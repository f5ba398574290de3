"""CWR* (docs/method.md §3) against a two-experience example worked out by hand: 3 classes, 2 features."""

import numpy as np
import pytest

from bnncl.core.cwr import CWRStar
from bnncl.core.errors import ConfigError


def _two_experiences():
    """Experience 1: classes {0, 1} (cur 2 and 4); experience 2: classes {1, 2} (cur 1 and 3)."""
    c = CWRStar(num_classes=3, feature_dim=2)
    cur1 = np.array([2, 4, 0])
    rows1 = c.begin(cur1)
    tw1 = np.array([[1.0, 3.0],
                    [2.0, 6.0],
                    [5.0, 5.0]])  # row 2 is absent: it must not enter the mean `a` nor be consolidated
    c.consolidate(tw1, cur1)
    after1 = (c.cw.copy(), c.past.copy())
    cur2 = np.array([0, 1, 3])
    rows2 = c.begin(cur2)
    tw2 = np.array([[7.0, 7.0],  # absent class 0
                    [4.0, 0.0],
                    [2.0, 6.0]])
    c.consolidate(tw2, cur2)
    return c, rows1, after1, rows2


def test_first_experience_by_hand():
    _, rows1, (cw, past), _ = _two_experiences()
    # Nothing consolidated yet: the head starts from zero everywhere.
    np.testing.assert_array_equal(rows1, np.zeros((3, 2)))
    # a = mean of the entries of the present rows 0 and 1 = (1 + 3 + 2 + 6) / 4 = 3
    a = (1 + 3 + 2 + 6) / 4
    assert a == 3
    # Classes never consolidated before: cw[j] = tw[j] - a.
    expected = np.array([[1 - a, 3 - a],   # [-2, 0]
                         [2 - a, 6 - a],   # [-1, 3]
                         [0.0, 0.0]])      # class 2 not seen: stays zero
    np.testing.assert_array_equal(cw, expected)
    np.testing.assert_array_equal(past, [2, 4, 0])


def test_second_experience_by_hand():
    c, _, _, rows2 = _two_experiences()
    # begin(): class 0 absent -> zero even though consolidated; class 1 present and consolidated -> cw[1];
    # class 2 present but new -> zero.
    np.testing.assert_array_equal(rows2, np.array([[0.0, 0.0],
                                                   [-1.0, 3.0],
                                                   [0.0, 0.0]]))
    # a = mean of the entries of present rows 1 and 2 = (4 + 0 + 2 + 6) / 4 = 3
    a = (4 + 0 + 2 + 6) / 4
    w1 = np.array([4 - a, 0 - a])   # [1, -3]
    w2 = np.array([2 - a, 6 - a])   # [-1, 3]
    wpast1 = np.sqrt(4 / 1)         # past[1] = 4, cur[1] = 1 -> 2
    assert wpast1 == 2
    cw1_old = np.array([-1.0, 3.0])
    cw1 = (cw1_old * wpast1 + w1) / (wpast1 + 1)  # ([-2, 6] + [1, -3]) / 3 = [-1/3, 1]
    np.testing.assert_allclose(cw1, [-1 / 3, 1.0], rtol=0, atol=1e-15)  # the hand arithmetic itself
    expected = np.array([[-2.0, 0.0],  # class 0 absent: untouched
                         cw1,
                         w2])          # class 2 new: cw = w
    np.testing.assert_allclose(c.cw, expected, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(c.past, [2 + 0, 4 + 1, 0 + 3])
    np.testing.assert_allclose(c.inference_rows(), expected, rtol=1e-15, atol=1e-15)


def test_wpast_non_square_ratio():
    """past = 3, cur = 1: wpast = sqrt(3), an irrational weight."""
    c = CWRStar(2, 1)
    c.consolidate(np.array([[4.0], [0.0]]), [3, 1])  # a = 2 -> cw = [2, -2]
    np.testing.assert_array_equal(c.cw, [[2.0], [-2.0]])
    c.consolidate(np.array([[10.0], [0.0]]), [1, 0])  # only class 0 present: a = 10 -> w = 0
    wp = np.sqrt(3.0)
    np.testing.assert_allclose(c.cw[0, 0], (2.0 * wp + 0.0) / (wp + 1), rtol=1e-15)
    assert c.cw[1, 0] == -2.0
    np.testing.assert_array_equal(c.past, [4, 1])


def test_begin_copies_only_present_consolidated_rows():
    c, *_ = _two_experiences()
    # cw = [[-2, 0], [-1/3, 1], [-1, 3]], every class consolidated; present: 0 and 2.
    rows = c.begin([5, 0, 1])
    np.testing.assert_array_equal(rows[0], c.cw[0])
    np.testing.assert_array_equal(rows[1], [0.0, 0.0])
    np.testing.assert_array_equal(rows[2], c.cw[2])
    # begin() hands out a new array: writing to it must not touch the consolidated rows.
    rows[0] = 99.0
    assert (c.cw[0] != 99.0).all()
    # An experience with no class present zeroes every row.
    np.testing.assert_array_equal(c.begin([0, 0, 0]), np.zeros((3, 2)))


def test_consolidate_with_nothing_present_changes_nothing():
    c, *_ = _two_experiences()
    cw, past = c.cw.copy(), c.past.copy()
    c.consolidate(np.full((3, 2), 8.0), [0, 0, 0])
    np.testing.assert_array_equal(c.cw, cw)
    np.testing.assert_array_equal(c.past, past)


def test_inference_rows_is_a_copy():
    c, *_ = _two_experiences()
    rows = c.inference_rows()
    np.testing.assert_array_equal(rows, c.cw)
    rows[:] = 0
    assert np.abs(c.cw).sum() > 0


def test_state_round_trip():
    c, *_ = _two_experiences()
    s = c.state()
    fresh = CWRStar(3, 2)
    fresh.load_state(s)
    np.testing.assert_array_equal(fresh.cw, c.cw)
    np.testing.assert_array_equal(fresh.past, c.past)
    # The state is a snapshot: later consolidation does not change it.
    c.consolidate(np.ones((3, 2)) * np.array([[1.0], [2.0], [3.0]]), [1, 1, 1])
    assert not np.array_equal(s["cw"], c.cw)
    # Both continue identically from the same state.
    fresh2 = CWRStar(3, 2)
    fresh2.load_state(s)
    fresh2.consolidate(np.ones((3, 2)) * np.array([[1.0], [2.0], [3.0]]), [1, 1, 1])
    np.testing.assert_array_equal(fresh2.cw, c.cw)
    np.testing.assert_array_equal(fresh2.past, c.past)


@pytest.mark.parametrize("cw_shape,past_shape", [((4, 2), (4,)), ((3, 3), (3,)), ((3, 2), (4,))])
def test_load_state_shape_mismatch(cw_shape, past_shape):
    c = CWRStar(3, 2)
    with pytest.raises(ConfigError, match="does not fit"):
        c.load_state({"cw": np.zeros(cw_shape), "past": np.zeros(past_shape, np.int64)})
    np.testing.assert_array_equal(c.cw, np.zeros((3, 2)))  # untouched


@pytest.mark.parametrize("cur", [[1, 2], [1, 2, 3, 4], [[1, 2, 3]], [1, -1, 0]])
def test_bad_cur_raises(cur):
    c = CWRStar(3, 2)
    with pytest.raises(ConfigError, match="cur must be 3 non-negative counts"):
        c.begin(cur)
    with pytest.raises(ConfigError, match="cur must be 3 non-negative counts"):
        c.consolidate(np.zeros((3, 2)), cur)


def test_nbytes():
    # 3 x 2 consolidated values at 4 bytes + 3 int32 counts.
    assert CWRStar(3, 2).nbytes() == 3 * 2 * 4 + 3 * 4
    assert CWRStar(3, 2).nbytes(bytes_per_value=2) == 3 * 2 * 2 + 3 * 4
