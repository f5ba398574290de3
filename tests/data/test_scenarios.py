"""Scenario factories (NC, NI, NIC, CORe50) on small synthetic datasets whose images carry a per-pattern id."""

import numpy as np
import pytest

from bnncl.core.errors import ConfigError
from bnncl.data.arrays import LabelledArrays
from bnncl.data.scenarios import core50, make_stream, nc, ni, nic, shift_images
from fixtures import write_core50

K = 6


def dataset(per_class=10, k=K, hw=8, seed=0, name="synthetic"):
    """Random uint8 images; pixels (0, 0) and (0, 1) of channel 0 hold the pattern id (low, high byte)."""
    rng = np.random.default_rng(seed)
    n = per_class * k
    y = np.repeat(np.arange(k), per_class)
    rng.shuffle(y)
    x = rng.integers(0, 256, size=(n, hw, hw, 1), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256
    x[:, 0, 1, 0] = np.arange(n) // 256
    return LabelledArrays(x, y.astype(np.int64), tuple(f"c{i}" for i in range(k)), name)


def ids(data: LabelledArrays) -> np.ndarray:
    return data.x[:, 0, 0, 0].astype(np.int64) + 256 * data.x[:, 0, 1, 0].astype(np.int64)


TRAIN, TEST = dataset(), dataset(per_class=3, seed=1, name="test")


def assert_partition(stream, train):
    """Every training pattern in exactly one experience, with its own image and label."""
    all_ids = np.concatenate([ids(e.data) for e in stream.experiences])
    assert sorted(all_ids.tolist()) == list(range(len(train)))
    for e in stream.experiences:
        np.testing.assert_array_equal(e.data.x, train.x[ids(e.data)])
        np.testing.assert_array_equal(e.data.y, train.y[ids(e.data)])


# -- NC ------------------------------------------------------------------------------------------------------------

def test_nc_disjoint_classes_covering_everything():
    s = nc(TRAIN, TEST, n_experiences=3, seed=4)
    assert len(s) == 3
    classes = [e.classes for e in s.experiences]
    assert all(len(c) == 2 for c in classes)
    flat = [c for cs in classes for c in cs]
    assert sorted(flat) == list(range(K))  # disjoint and covering
    assert_partition(s, TRAIN)
    for e in s.experiences:  # all patterns of the experience's classes
        assert len(e) == int(np.isin(TRAIN.y, e.classes).sum())
    assert s.test is TEST
    assert [sorted(g) for g in s.info["classes_per_experience"]] == classes
    assert sorted(s.info["class_order"]) == list(range(K))
    assert [e.index for e in s.experiences] == [0, 1, 2]


def test_nc_class_order_from_seed():
    orders = [nc(TRAIN, TEST, n_experiences=3, seed=seed).info["class_order"] for seed in range(5)]
    assert len({tuple(o) for o in orders}) > 1  # the seed changes the order
    again = nc(TRAIN, TEST, n_experiences=3, seed=2)
    assert again.info["class_order"] == orders[2]
    for a, b in zip(again.experiences, nc(TRAIN, TEST, n_experiences=3, seed=2).experiences):
        np.testing.assert_array_equal(a.data.x, b.data.x)
        np.testing.assert_array_equal(a.data.y, b.data.y)
    # the experiences follow the class order
    order = again.info["class_order"]
    assert [e.classes for e in again.experiences] == [sorted(order[0:2]), sorted(order[2:4]), sorted(order[4:6])]


def test_nc_first_gives_a_bigger_first_experience():
    s = nc(TRAIN, TEST, n_experiences=3, first=4, seed=1)
    assert [len(e.classes) for e in s.experiences] == [4, 1, 1]
    assert len(s.experiences[0]) == 4 * 10 and len(s.experiences[1]) == 10
    assert_partition(s, TRAIN)


@pytest.mark.parametrize("kw", [dict(n_experiences=4), dict(n_experiences=5), dict(n_experiences=3, first=3),
                                dict(n_experiences=7), dict(n_experiences=0), dict(n_experiences=1, first=2),
                                dict(n_experiences=3, first=6)])
def test_nc_uneven_or_impossible_splits(kw):
    with pytest.raises(ConfigError, match="NC"):
        nc(TRAIN, TEST, **kw)


# -- NI ------------------------------------------------------------------------------------------------------------

def test_ni_stratified_disjoint_covering():
    s = ni(TRAIN, TEST, n_experiences=3, seed=0)
    assert len(s) == 3
    assert_partition(s, TRAIN)
    counts = np.array([np.bincount(e.data.y, minlength=K) for e in s.experiences])  # experience x class
    assert (counts > 0).all()
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()
    assert s.test is TEST


def test_ni_rotation_shift():
    n = 3
    plain = ni(TRAIN, TEST, n_experiences=n, seed=5)
    rot = ni(TRAIN, TEST, n_experiences=n, shift="rotation", seed=5)
    train_x = TRAIN.x.copy()
    # Same shards; experience 0 at strength 0 is unchanged, later ones differ.
    np.testing.assert_array_equal(rot.experiences[0].data.x, plain.experiences[0].data.x)
    for i in (1, 2):
        np.testing.assert_array_equal(rot.experiences[i].data.y, plain.experiences[i].data.y)
        assert not np.array_equal(rot.experiences[i].data.x, plain.experiences[i].data.x)
        np.testing.assert_array_equal(rot.experiences[i].data.x,
                                      shift_images(plain.experiences[i].data.x, "rotation", i / (n - 1), None))
    # The test set mixes the experiences' strengths: each image is the original at one of them, not all at 0.
    np.testing.assert_array_equal(rot.test.y, TEST.y)
    versions = [shift_images(TEST.x, "rotation", s, None) for s in (0.0, 0.5, 1.0)]
    match = np.array([[np.array_equal(rot.test.x[j], v[j]) for v in versions] for j in range(len(TEST))])
    assert (match.sum(axis=1) == 1).all()  # random images: the three versions differ, each image matches one
    assert match.any(axis=0).all()  # every experience's strength occurs in the test set
    # The inputs are not modified in place.
    np.testing.assert_array_equal(TRAIN.x, train_x)
    assert rot.info["strengths"] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("kind", ["rotation", "contrast", "noise"])
def test_shift_amount_zero_is_identity(kind):
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(shift_images(TRAIN.x, kind, 0, rng), TRAIN.x)
    np.testing.assert_array_equal(shift_images(TRAIN.x, "none", 1.0, rng), TRAIN.x)


def _forward_rotate(r, c, deg, h, w):
    """Where pixel (row r, col c) goes when rotated by ``deg`` about the image centre, with the standard rotation
    matrix in pixel coordinates (x = column to the right, y = row downwards)."""
    t = np.deg2rad(deg)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    x, y = R @ np.array([c - cx, r - cy])
    return y + cy, x + cx


@pytest.mark.parametrize("src", [(4, 8), (0, 4), (4, 0), (6, 2)])
def test_rotation_moves_a_bright_pixel_where_the_oracle_says(src):
    h = w = 9
    img = np.zeros((1, h, w, 1), np.uint8)
    img[0, src[0], src[1], 0] = 255
    out = shift_images(img, "rotation", 1.0, None)  # 45 degrees
    ty, tx = _forward_rotate(*src, 45.0, h, w)
    bright = np.argwhere(out[0, :, :, 0] == 255)
    assert len(bright) >= 1
    # nearest-neighbour inverse mapping: every output pixel lit by the source lies within half a pixel diagonal
    d = np.hypot(bright[:, 0] - ty, bright[:, 1] - tx)
    assert (d <= np.sqrt(0.5) + 1e-9).all(), (bright, (ty, tx))
    assert set(np.unique(out).tolist()) <= {0, 255}


@pytest.mark.parametrize("src", [(4, 8), (0, 4)])
def test_rotation_lights_the_pixel_nearest_the_rotated_point(src):
    """For these points the rotated point lies well inside a pixel, so that pixel must be lit."""
    h = w = 9
    img = np.zeros((1, h, w, 1), np.uint8)
    img[0, src[0], src[1], 0] = 255
    out = shift_images(img, "rotation", 1.0, None)
    ty, tx = _forward_rotate(*src, 45.0, h, w)
    assert out[0, int(round(ty)), int(round(tx)), 0] == 255
    assert out[0, src[0], src[1], 0] == 0  # it moved


# -- NIC -----------------------------------------------------------------------------------------------------------

def test_nic():
    first, n_batches = 2, 12
    s = nic(TRAIN, TEST, first=first, n_batches=n_batches, first_fraction=0.5, seed=3)
    assert len(s) == 1 + n_batches
    assert len(s.experiences[0].classes) == first
    assert s.experiences[0].classes == sorted(s.info["first_classes"])
    # half of the instances of each first class
    assert len(s.experiences[0]) == first * 5
    for e in s.experiences[1:]:
        assert len(e.classes) == 1 and len(e) > 0
    assert_partition(s, TRAIN)
    # every class appears somewhere after experience 0 (new classes and new instances of known ones)
    later = {c for e in s.experiences[1:] for c in e.classes}
    assert later == set(range(K))


def test_nic_reproducible_and_errors():
    a, b = nic(TRAIN, TEST, seed=9), nic(TRAIN, TEST, seed=9)
    assert [e.classes for e in a.experiences] == [e.classes for e in b.experiences]
    for ea, eb in zip(a.experiences, b.experiences):
        np.testing.assert_array_equal(ids(ea.data), ids(eb.data))
    for kw in (dict(first=0), dict(first=K), dict(first_fraction=1.0), dict(first=2, n_batches=3)):
        with pytest.raises(ConfigError, match="NIC"):
            nic(TRAIN, TEST, **kw)


# -- make_stream and CORe50 ----------------------------------------------------------------------------------------

def test_make_stream():
    s = make_stream("nc", TRAIN, TEST, n_experiences=2, seed=1)
    assert len(s) == 2 and s.info["scenario"] == "nc"
    with pytest.raises(ConfigError, match=r"unknown scenario 'nx' \(valid: nc, ni, nic, core50\)"):
        make_stream("nx", TRAIN, TEST)
    with pytest.raises(ConfigError, match=r"scenario 'ni' has no option n_exp \(valid: n_experiences, shift, seed\)"):
        make_stream("ni", TRAIN, TEST, n_exp=3)
    with pytest.raises(ConfigError, match=r"valid: first, n_batches, first_fraction, seed"):
        make_stream("nic", TRAIN, TEST, frist=2)


def test_core50_stream_follows_lup(tmp_path):
    w = write_core50(tmp_path, scenarios=("ni",), runs=2, per_batch=5)
    s = core50(tmp_path, "ni", run=1)
    lup = w["lup"]["ni"][1]
    assert len(s) == len(lup) - 1 == 8
    for b, e in enumerate(s.experiences):
        assert e.index == b
        np.testing.assert_array_equal(e.data.x, w["x"][lup[b]])
        np.testing.assert_array_equal(e.data.y, w["objects"][lup[b]] // 5)
    np.testing.assert_array_equal(s.test.x, w["x"][lup[-1]])
    np.testing.assert_array_equal(s.test.y, w["objects"][lup[-1]] // 5)
    assert s.num_classes == 10 and s.input_shape == (128, 128, 3)
    obj = core50(tmp_path, "ni", run=0, labels="object")
    np.testing.assert_array_equal(obj.experiences[0].data.y, w["objects"][w["lup"]["ni"][0][0]])
    assert obj.num_classes == 50


def test_ni_refuses_more_experiences_than_the_smallest_class_has_patterns():
    x = np.zeros((12, 4, 4, 1), np.uint8)
    y = np.array([0, 0] + [1] * 10)
    data = LabelledArrays(x, y, ("a", "b"), "uneven")
    with pytest.raises(ConfigError, match=r"n_experiences must be in 1\.\.2 \(patterns of the smallest class\), got 3"):
        ni(data, data, n_experiences=3)
    assert all(e.classes == [0, 1] for e in ni(data, data, n_experiences=2).experiences)


def test_nc_explicit_order_puts_base_classes_first():
    train = dataset()
    k = len(np.unique(train.y))
    order = list(range(k))[::-1]
    s = nc(train, train, n_experiences=k, order=order)
    assert [e.classes for e in s.experiences] == [[c] for c in order]
    with pytest.raises(ConfigError, match="order must list each class present exactly once"):
        nc(train, train, n_experiences=k, order=order[:-1])
