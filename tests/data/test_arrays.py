import numpy as np
import pytest

from bnncl.core.errors import DataError
from bnncl.data import LabelledArrays


def make(n=100, classes=5):
    y = np.arange(n) % classes
    x = np.zeros((n, 2, 2, 1), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return LabelledArrays(x, y.astype(np.int64), tuple(f"c{i}" for i in range(classes)), "toy")


def test_select_classes_keeps_numbering_and_order():
    d = make().select(classes=[3, 1])
    assert set(d.y) == {1, 3} and d.num_classes == 5
    assert np.all(np.diff(d.x[:, 0, 0, 0].astype(int)) > 0)


def test_select_fraction_is_stratified_and_seeded():
    d = make(200, 4)
    a, b, c = d.select(fraction=0.25, seed=1), d.select(fraction=0.25, seed=1), d.select(fraction=0.25, seed=2)
    assert list(a.class_counts()) == [round(0.25 * 50)] * 4
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_select_errors():
    d = make()
    with pytest.raises(DataError, match=r"classes \[7\] out of range \[0, 5\)"):
        d.select(classes=[1, 7])
    with pytest.raises(DataError, match="fraction must be in"):
        d.select(fraction=1.5)


def test_validation():
    x = np.zeros((3, 2, 2, 1), np.uint8)
    with pytest.raises(DataError, match="3 images but labels of shape"):
        LabelledArrays(x, np.zeros(2, np.int64), ("a", "b"), "t")
    with pytest.raises(DataError, match="label 2 out of range"):
        LabelledArrays(x, np.array([0, 1, 2]), ("a", "b"), "t")
    with pytest.raises(DataError, match="uint8 NHWC"):
        LabelledArrays(x.astype(np.float32), np.zeros(3, np.int64), ("a", "b"), "t")


def test_split_fraction_is_disjoint_stratified_and_complete():
    d = make(200, 4)
    part, rest = d.split_fraction(0.3, seed=4)
    ids_part, ids_rest = set(part.x[:, 0, 0, 0]), set(rest.x[:, 0, 0, 0])
    assert not ids_part & ids_rest and len(ids_part | ids_rest) == len(d)
    assert list(part.class_counts()[:4]) == [15] * 4  # 30 % of 50 per class
    with pytest.raises(DataError, match="split fraction must be in"):
        d.split_fraction(1.0)
