"""bnncl pretrain and bnncl evaluate, and their one-line errors for bad input."""

import json

import pytest

from bnncl.checkpoint import save_checkpoint
from bnncl.cli import main
from bnncl.models import build_model, preset_config
from fixtures import write_idx_dataset


def test_pretrain_then_evaluate(capsys, data_dir, tmp_path):
    ckpt = tmp_path / "m.pt"
    argv = ["pretrain", "--data", str(data_dir), "--epochs", "1", "--batch-size", "16", "--max-steps", "2",
            "--out", str(ckpt), "--quiet", "--json", str(tmp_path / "p.json")]
    assert main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["history"][0]["epoch"] == 1

    assert main(["evaluate", str(ckpt), "--data", str(data_dir), "--out", str(tmp_path / "e.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "e.json").read_text())
    assert report["n"] == 24
    assert sum(c["n"] for c in report["per_class"].values()) == 24
    confusion = report["confusion"]
    assert sum(map(sum, confusion)) == 24
    assert report["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(10)) / 24)


def test_evaluate_checkpoint_of_another_architecture(one_line_error, data_dir, tmp_path):
    ckpt = tmp_path / "cifar.pt"
    save_checkpoint(ckpt, build_model(preset_config("cifar10", 10)))
    one_line_error(["evaluate", str(ckpt), "--data", str(data_dir)], str(ckpt), "takes 32x32x3 images", "28x28x1")


def test_resume_from_checkpoint_of_another_architecture(one_line_error, data_dir, tmp_path):
    ckpt = tmp_path / "other.pt"
    save_checkpoint(ckpt, build_model(preset_config("fmnist", 10, stages=((64, 1, 2),))))
    one_line_error(["pretrain", "--data", str(data_dir), "--out", str(ckpt), "--resume", "--quiet"],
                   str(ckpt), "another architecture")


def test_evaluate_missing_and_corrupt_checkpoint(one_line_error, data_dir, tmp_path):
    one_line_error(["evaluate", str(tmp_path / "nope.pt"), "--data", str(data_dir)], "nope.pt", "no such checkpoint")
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, build_model(preset_config("fmnist", 10)))
    bad.write_bytes(bad.read_bytes()[:1000])
    one_line_error(["evaluate", str(bad), "--data", str(data_dir)], str(bad), "truncated or corrupt")


def test_truncated_gzip_is_one_line_naming_the_file(one_line_error, tmp_path):
    d = tmp_path / "data"
    write_idx_dataset(d, n_train=20, n_test=10, seed=0)
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    one_line_error(["pretrain", "--data", str(d), "--out", str(tmp_path / "m.pt"), "--quiet"], str(f), "truncated")


def test_core50_options_refused_for_other_datasets(one_line_error, data_dir, tmp_path):
    one_line_error(["pretrain", "--data", str(data_dir), "--scenario", "ni", "--out", str(tmp_path / "m.pt")],
                   "--scenario applies to the core50 dataset only")
