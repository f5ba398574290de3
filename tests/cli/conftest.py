"""What the command-line tests share: a small Fashion-MNIST-format dataset, and the check of a one-line error."""

import pytest

from bnncl.cli import main
from fixtures import write_idx_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmnist")
    write_idx_dataset(d, n_train=48, n_test=24, seed=2)
    return d


@pytest.fixture
def one_line_error(capsys):
    """``one_line_error(argv, *needles)``: ``bnncl argv`` exits with 2 and one line on stderr, ``bnncl: error: ...``,
    holding every needle; that line."""

    def check(argv, *needles):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("bnncl: error: ")
        for n in needles:
            assert n in err, err
        return err

    return check
