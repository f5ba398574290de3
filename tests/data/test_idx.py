import gzip

import numpy as np
import pytest

from bnncl.core.errors import DataError
from bnncl.data import load_dataset, load_idx_dataset, read_idx
from fixtures import idx_bytes, write_idx_dataset


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("sep", ["-", "."])
def test_reads_what_was_written(tmp_path, gz, sep):
    written = write_idx_dataset(tmp_path, n_train=30, n_test=12, gz=gz, sep=sep, seed=1)
    for split in ("train", "test"):
        d = load_idx_dataset(tmp_path, split)
        x, y = written[split]
        assert d.x.shape == (len(x), 28, 28, 1) and d.x.dtype == np.uint8
        np.testing.assert_array_equal(d.x[..., 0], x)
        np.testing.assert_array_equal(d.y, y)
        assert d.class_names[0] == "T-shirt/top" and d.num_classes == 10


def test_read_idx_any_rank(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)


def test_truncated_gzip_names_file(tmp_path):
    write_idx_dataset(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated gzip"):
        load_idx_dataset(tmp_path, "train")


def test_truncated_raw_data(tmp_path):
    write_idx_dataset(tmp_path, gz=False)
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: truncated: header says 20x28x28"):
        load_idx_dataset(tmp_path, "test")


def test_trailing_bytes(tmp_path):
    (tmp_path / "a").write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b"xx")
    with pytest.raises(DataError, match="2 unexpected bytes"):
        read_idx(tmp_path / "a")


def test_wrong_magic_names_file(tmp_path):
    write_idx_dataset(tmp_path)
    f = tmp_path / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(f.read_bytes()))
    data[2] = 0x0D  # float type, not used by this family
    f.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: wrong idx magic number 0x00000d01"):
        load_idx_dataset(tmp_path, "train")


def test_image_label_count_mismatch(tmp_path):
    write_idx_dataset(tmp_path, n_train=30)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(29, np.uint8))))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: 29 labels but "
                                        r"train-images-idx3-ubyte\.gz holds 30 images"):
        load_idx_dataset(tmp_path, "train")


def test_label_out_of_range(tmp_path):
    write_idx_dataset(tmp_path, n_train=30)
    labels = np.zeros(30, np.uint8)
    labels[7] = 10
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DataError, match="label 10 at index 7 is out of range for 10 classes"):
        load_idx_dataset(tmp_path, "train")


def test_missing_file_and_directory(tmp_path):
    write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: no such file \(also looked for"):
        load_idx_dataset(tmp_path, "test")
    with pytest.raises(DataError, match="no such data directory"):
        load_idx_dataset(tmp_path / "nowhere", "train")


def test_images_must_be_3d(tmp_path):
    write_idx_dataset(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((60, 784), np.uint8))))
    with pytest.raises(DataError, match="expected images of N x rows x cols"):
        load_idx_dataset(tmp_path, "train")


def test_mnist_names_and_unknown_split(tmp_path):
    write_idx_dataset(tmp_path)
    d = load_dataset("mnist", str(tmp_path), "train")
    assert d.class_names == tuple("0123456789") and d.name == "mnist train"
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("mnist", str(tmp_path), "val")
