"""The same protocol on CIFAR-10 and CORe50 files in their official formats (small generated fixtures)."""

import json

import pytest
import torch

from bnncl.cli import main
from fixtures import write_cifar10, write_core50


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_cifar10_nc_5x2(tmp_path):
    write_cifar10(tmp_path / "cifar", per_batch=10, test=20)
    out = tmp_path / "run"
    assert main(["learn", "--dataset", "cifar10", "--data", str(tmp_path / "cifar"), "--stream", "nc",
                 "--experiences", "5", "--strategy", "cwr", "ar1", "--pretrain-epochs", "1", "--epochs", "1",
                 "--batch-size", "10", "--replay-size", "10", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["backbone"]["architecture"].startswith("cifar10: input 32x32x3")
    ar1 = res["runs"][1]
    assert ar1["stream"]["sizes"] == [10] * 5 and ar1["latent_shape"] == [256, 8, 8] and len(ar1["accuracy"]) == 5


def test_cifar10_ni_with_shift(tmp_path):
    write_cifar10(tmp_path / "cifar", per_batch=20, test=20)
    out = tmp_path / "run"
    assert main(["learn", "--dataset", "cifar10", "--data", str(tmp_path / "cifar"), "--stream", "ni",
                 "--experiences", "2", "--shift", "contrast", "--strategy", "cwr", "--pretrain-epochs", "1",
                 "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["runs"][0]["stream"]["shift"] == "contrast" and len(res["runs"][0]["accuracy"]) == 2


def test_core50_official_scenario(tmp_path):
    w = write_core50(tmp_path / "core50", scenarios=("ni", "nicv2_79"), runs=2, per_batch=3, n_images=60)
    out = tmp_path / "run"
    assert main(["learn", "--dataset", "core50", "--data", str(tmp_path / "core50"), "--stream", "core50",
                 "--scenario", "ni", "--run", "1", "--labels", "object", "--strategy", "cwr",
                 "--pretrain-epochs", "1", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "result.json").read_text())
    run = res["runs"][0]
    assert run["stream"]["name"] == "core50-ni-run1" and run["stream"]["sizes"] == [3] * 8
    assert run["stream"]["test"] == len(w["lup"]["ni"][1][-1]) and len(run["accuracy_matrix"][0]) == 50


def test_core50_scenario_missing_from_lup_is_one_line(tmp_path, capsys):
    write_core50(tmp_path / "core50", scenarios=("ni",), runs=1, per_batch=2, n_images=20)
    assert main(["learn", "--dataset", "core50", "--data", str(tmp_path / "core50"), "--stream", "core50",
                 "--scenario", "nicv2_391", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "LUP.pkl: no scenario 'nicv2_391' (has: ni)" in err
