import pickle

import numpy as np
import pytest

from bnncl.core.errors import DataError
from bnncl.data import load_cifar10, load_dataset
from fixtures import write_cifar10


@pytest.mark.parametrize("key_type", [str, bytes])
@pytest.mark.parametrize("folder", [True, False])
def test_reads_official_layout(tmp_path, key_type, folder):
    written = write_cifar10(tmp_path, per_batch=6, test=5, key_type=key_type, folder=folder)
    train = load_cifar10(tmp_path, "train")
    assert train.x.shape == (30, 32, 32, 3) and train.x.dtype == np.uint8 and train.x.flags.c_contiguous
    np.testing.assert_array_equal(train.x, np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]))
    np.testing.assert_array_equal(train.y, np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)]))
    test = load_dataset("cifar10", str(tmp_path), "test")
    np.testing.assert_array_equal(test.x, written["test_batch"][0])
    assert test.class_names[0] == "airplane" and test.num_classes == 10


def test_pixel_order_is_channel_major(tmp_path):
    write_cifar10(tmp_path, per_batch=2, test=2)
    d = tmp_path / "cifar-10-batches-py"
    with open(d / "test_batch", "rb") as f:
        b = pickle.load(f)
    flat = np.zeros((2, 3072), np.uint8)
    flat[0, 1024 + 32 + 2] = 77  # green channel, row 1, column 2
    b["data"] = flat
    with open(d / "test_batch", "wb") as f:
        pickle.dump(b, f, protocol=2)
    x = load_cifar10(tmp_path, "test").x
    assert x[0, 1, 2, 1] == 77 and x.sum() == 77


def test_missing_batch_names_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"data_batch_4: no such file"):
        load_cifar10(tmp_path, "train")


def test_truncated_batch(tmp_path):
    write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "test_batch"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(DataError, match=r"test_batch: (truncated pickle|not a readable pickle)"):
        load_cifar10(tmp_path, "test")


def test_count_mismatch_and_bad_label(tmp_path):
    write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(f, "rb") as fh:
        b = pickle.load(fh)
    b["labels"] = b["labels"][:-1]
    f.write_bytes(pickle.dumps(b, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: 10 images but 9 labels"):
        load_cifar10(tmp_path, "test")
    b["labels"] = [12] * 10
    f.write_bytes(pickle.dumps(b, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: label 12 out of range"):
        load_cifar10(tmp_path, "test")


class Evil:
    def __reduce__(self):
        return (print, ("owned",))


def test_pickle_cannot_run_code(tmp_path, capsys):
    write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "test_batch"
    f.write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load global (__builtin__|builtins)\.print"):
        load_cifar10(tmp_path, "test")
    assert "owned" not in capsys.readouterr().out


def test_needs_a_directory():
    with pytest.raises(DataError, match="give the directory"):
        load_dataset("cifar10", None, "train")
