"""The command line: summary, pretrain, evaluate, and one-line errors for bad input."""

import json
import re
import subprocess
import sys

import pytest

from bnncl.checkpoint import save_checkpoint
from bnncl.cli import main
from bnncl.models import build_model, preset_config
from fixtures import write_idx_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmnist")
    write_idx_dataset(d, n_train=48, n_test=24, seed=2)
    return d


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("bnncl: error: ")
    for n in needles:
        assert n in err, err
    return err


def test_summary_reports_at_least_10x_smaller(capsys, tmp_path):
    assert main(["summary", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    ratio = float(re.search(r"([\d.]+)x smaller", out).group(1))
    s = json.loads((tmp_path / "s.json").read_text())
    assert ratio == pytest.approx(s["totals"]["fp32_over_deployed"], abs=0.05)
    assert ratio >= 10
    assert s["totals"]["params_1bit"] > 0


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


def test_evaluate_checkpoint_of_another_architecture(capsys, data_dir, tmp_path):
    ckpt = tmp_path / "cifar.pt"
    save_checkpoint(ckpt, build_model(preset_config("cifar10", 10)))
    _one_line_error(capsys, ["evaluate", str(ckpt), "--data", str(data_dir)], str(ckpt), "takes 32x32x3 images",
                    "28x28x1")


def test_resume_from_checkpoint_of_another_architecture(capsys, data_dir, tmp_path):
    ckpt = tmp_path / "other.pt"
    save_checkpoint(ckpt, build_model(preset_config("fmnist", 10, stages=((64, 1, 2),))))
    _one_line_error(capsys, ["pretrain", "--data", str(data_dir), "--out", str(ckpt), "--resume", "--quiet"],
                    str(ckpt), "another architecture")


def test_evaluate_missing_and_corrupt_checkpoint(capsys, data_dir, tmp_path):
    _one_line_error(capsys, ["evaluate", str(tmp_path / "nope.pt"), "--data", str(data_dir)], "nope.pt",
                    "no such checkpoint")
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, build_model(preset_config("fmnist", 10)))
    bad.write_bytes(bad.read_bytes()[:1000])
    _one_line_error(capsys, ["evaluate", str(bad), "--data", str(data_dir)], str(bad), "truncated or corrupt")


def test_truncated_gzip_is_one_line_naming_the_file(capsys, tmp_path):
    d = tmp_path / "data"
    write_idx_dataset(d, n_train=20, n_test=10, seed=0)
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    _one_line_error(capsys, ["pretrain", "--data", str(d), "--out", str(tmp_path / "m.pt"), "--quiet"], str(f),
                    "truncated")


def test_core50_options_refused_for_other_datasets(capsys, data_dir, tmp_path):
    _one_line_error(capsys, ["pretrain", "--data", str(data_dir), "--scenario", "ni", "--out", str(tmp_path / "m.pt")],
                    "--scenario applies to the core50 dataset only")


def test_console_script_help():
    for sub in ([], ["summary"], ["pretrain"], ["evaluate"]):
        proc = subprocess.run([sys.executable, "-m", "bnncl.cli", *sub, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: bnncl" in proc.stdout


def test_export_then_device_predict_and_info(capsys, tmp_path):
    import numpy as np

    model = build_model(preset_config("fmnist", 10))
    save_checkpoint(tmp_path / "model.pt", model,
                    meta={"trained_classes": [0, 1, 2], "class_names": list("abcdefghij")})
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.bnn")]) == 0
    out = capsys.readouterr().out
    assert "latent-replay layer: block5" in out and float(re.search(r"([\d.]+)x smaller", out).group(1)) >= 10
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 256, (9, 28, 28), dtype=np.uint8))  # (N, H, W): one channel implied
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 3, 4, 5, 6, 7, 8]))
    argv = ["device", "predict", str(tmp_path / "m.bnn"), "--images", str(tmp_path / "x.npy"),
            "--image-labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "p.json")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    pred = np.array(report["predictions"])
    assert report["images"] == 9 and report["class_names"] == list("abcdefghij")
    assert report["accuracy"] == pytest.approx(np.mean(pred == np.arange(9)))
    assert report["accuracy_on_trained_classes"] == pytest.approx(np.mean(pred[:3] == np.arange(3)))
    assert main(["device", "info", str(tmp_path / "m.bnn")]) == 0
    assert "frozen [stem, block1, block2, block3, block4]" in capsys.readouterr().out


def test_device_predict_bad_input(capsys, tmp_path):
    import numpy as np

    _one_line_error(capsys, ["device", "predict", str(tmp_path / "none.bnn")], "none.bnn", "no such model file")
    (tmp_path / "bad.bnn").write_bytes(b"PK\x03\x04 truncated")
    _one_line_error(capsys, ["device", "predict", str(tmp_path / "bad.bnn")], "bad.bnn")
    save_checkpoint(tmp_path / "model.pt", build_model(preset_config("fmnist", 10)))
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.bnn")]) == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 32, 32, 3), np.uint8))
    _one_line_error(capsys, ["device", "predict", str(tmp_path / "m.bnn"), "--images", str(tmp_path / "x.npy")],
                    "(N, 28, 28, 1)")
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    _one_line_error(capsys, ["device", "predict", str(tmp_path / "m.bnn"), "--images", str(tmp_path / "x.npy"),
                             "--image-labels", str(tmp_path / "y.npy")], "labels of shape (3,) for 2 images")
    (tmp_path / "t.npy").write_bytes(b"\x93NUMPY truncated")
    _one_line_error(capsys, ["device", "predict", str(tmp_path / "m.bnn"), "--images", str(tmp_path / "t.npy")],
                    "t.npy")


def test_device_learn_writes_results_figures_and_resumes(capsys, data_dir, tmp_path):
    """bnncl device learn: the same result.json/report.md/figures as bnncl learn; a second run resumes (learns nothing,
    the state file is untouched); other settings on the same state, an unknown strategy: one-line errors."""
    save_checkpoint(tmp_path / "model.pt", build_model(preset_config("fmnist", 10)))
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.bnn")]) == 0
    out = tmp_path / "run"
    argv = ["device", "learn", str(tmp_path / "m.bnn"), "--data", str(data_dir), "--stream", "nc", "--experiences", "2",
            "--epochs", "1", "--batch-size", "8", "--replay-size", "12", "--replay-batch", "4", "--q-f", "8",
            "--q-b", "16", "--q-bin", "8", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    run = result["runs"][0]
    assert result["device"] is True and run["options"]["lr_layer"] == "block5" and len(run["accuracy"]) == 2
    assert run["bytes"]["replay_patterns"] * 32 == 12 * 64 * 7 * 7 * 4  # block5's input, 1 bit per value
    for name in ("report.md", "accuracy.png", "matrix_ar1.png", "state_ar1.bnst", "state_ar1.bnst.prev"):
        assert (out / name).is_file(), name
    state = (out / "state_ar1.bnst").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming from" in capsys.readouterr().out
    assert (out / "state_ar1.bnst").read_bytes() == state
    _one_line_error(capsys, argv[:-3] + ["--qb", "12", "--out", str(out)], "state_ar1.bnst", "other settings",
                    "q_b 16")  # the old spelling of --q-b, still accepted
    assert (out / "state_ar1.bnst").read_bytes() == state
    _one_line_error(capsys, ["device", "learn", str(tmp_path / "m.bnn"), "--data", str(data_dir), "--config",
                             str(tmp_path / "none.toml")], "none.toml")
    # the frozen part 3 images at a time: the same learning, recorded, with a smaller peak; 0 images: an error
    chunked = tmp_path / "chunked"
    assert main(argv[:-3] + ["--out", str(chunked), "--frozen-chunk", "3", "--quiet"]) == 0
    other = json.loads((chunked / "result.json").read_text())["runs"][0]
    assert other["options"]["frozen_chunk"] == 3 and run["options"]["frozen_chunk"] is None
    assert other["accuracy"] == run["accuracy"]
    assert other["bytes"]["peak_activations"] < run["bytes"]["peak_activations"]
    _one_line_error(capsys, argv[:-3] + ["--out", str(tmp_path / "zero"), "--frozen-chunk", "0"], "frozen_chunk",
                    "at least 1")
