import pickle

import numpy as np
import pytest

from bnncl.core.errors import DataError
from bnncl.data import Core50, load_dataset
from fixtures import write_core50


@pytest.mark.parametrize("images,compressed", [("npz", False), ("npz", True), ("folders", False)])
def test_batches_line_up_with_lup_and_labels(tmp_path, images, compressed):
    w = write_core50(tmp_path, images=images, compressed=compressed)
    c = Core50(tmp_path, "nc", run=1, labels="object")
    assert c.num_train_batches == 9
    for b in (0, 4, 8):
        d = c.batch(b)
        idx = w["lup"]["nc"][1][b]
        np.testing.assert_array_equal(d.x, w["x"][idx])  # pixels incl. the per-image fingerprint
        np.testing.assert_array_equal(d.y, w["objects"][idx])
        assert d.num_classes == 50 and d.input_shape == (128, 128, 3)
    test = c.test()
    np.testing.assert_array_equal(test.y, w["objects"][w["lup"]["nc"][1][-1]])
    assert test.name == "core50 nc run 1 test"


def test_uncompressed_npz_is_memory_mapped(tmp_path):
    write_core50(tmp_path)
    assert isinstance(Core50(tmp_path)._images, np.memmap)


def test_category_labels_and_train_split(tmp_path):
    w = write_core50(tmp_path)
    train = load_dataset("core50", str(tmp_path), "train", scenario="ni", run=0)
    idx = np.concatenate(w["lup"]["ni"][0][:-1])
    np.testing.assert_array_equal(train.y, w["objects"][idx] // 5)
    assert train.num_classes == 10 and train.class_names[1] == "mobile phone"
    one = load_dataset("core50", str(tmp_path), "train", scenario="ni", run=0, batch=2)
    np.testing.assert_array_equal(one.x, w["x"][w["lup"]["ni"][0][2]])


def test_missing_scenario_is_one_line_naming_file(tmp_path):
    write_core50(tmp_path, scenarios=("ni", "nc"))
    with pytest.raises(DataError, match=r"LUP\.pkl: no scenario 'nicv2_391' \(has: ni, nc\)") as e:
        Core50(tmp_path, "nicv2_391")
    assert str(tmp_path / "LUP.pkl") in str(e.value) and "\n" not in str(e.value)


def test_run_out_of_range(tmp_path):
    write_core50(tmp_path, runs=2)
    with pytest.raises(DataError, match=r"LUP\.pkl: scenario 'ni' has runs 0-1, not 5"):
        Core50(tmp_path, "ni", run=5)


def test_batch_out_of_range(tmp_path):
    write_core50(tmp_path)
    with pytest.raises(DataError, match="training batches 0-7, not 8"):
        Core50(tmp_path, "ni").split("train", batch=8)


def test_labels_inconsistent_with_lup(tmp_path):
    w = write_core50(tmp_path)
    labels = w["labels"]
    labels["ni"][0][3] = labels["ni"][0][3][:-1]
    (tmp_path / "labels.pkl").write_bytes(pickle.dumps(labels, protocol=2))
    with pytest.raises(DataError, match=r"labels\.pkl: ni run 0 batch 3 has 3 labels but LUP\.pkl lists 4 images"):
        Core50(tmp_path, "ni")


def test_index_beyond_paths(tmp_path):
    w = write_core50(tmp_path, n_images=120)
    (tmp_path / "paths.pkl").write_bytes(pickle.dumps(w["paths"][:50], protocol=2))
    with pytest.raises(DataError, match=r"LUP\.pkl: image index \d+ but paths\.pkl lists only 50 images"):
        Core50(tmp_path, "ni")


def test_npz_count_mismatch_and_missing_images(tmp_path):
    w = write_core50(tmp_path, n_images=120)
    np.savez(tmp_path / "core50_imgs.npz", x=w["x"][:100])
    with pytest.raises(DataError, match=r"core50_imgs\.npz: 100 images but paths\.pkl lists 120"):
        Core50(tmp_path, "ni").batch(0)
    (tmp_path / "core50_imgs.npz").unlink()
    with pytest.raises(DataError, match="neither core50_imgs.npz nor the core50_128x128/ image folders"):
        Core50(tmp_path, "ni").batch(0)


def test_missing_image_in_folders(tmp_path):
    w = write_core50(tmp_path, images="folders")
    victim = w["paths"][w["lup"]["ni"][0][0][0]]
    (tmp_path / "core50_128x128" / victim).unlink()
    with pytest.raises(DataError, match="no such file \\(listed in paths.pkl\\)"):
        Core50(tmp_path, "ni").batch(0)


def test_truncated_lup(tmp_path):
    write_core50(tmp_path)
    f = tmp_path / "LUP.pkl"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(DataError, match=r"LUP\.pkl: (truncated pickle|not a readable pickle)"):
        Core50(tmp_path, "ni")


def test_unknown_option_refused(tmp_path):
    write_core50(tmp_path)
    with pytest.raises(DataError, match="core50 takes no option colour"):
        load_dataset("core50", str(tmp_path), "train", colour=1)
    with pytest.raises(DataError, match="labels must be 'object' or 'category'"):
        load_dataset("core50", str(tmp_path), "train", labels="instance")
