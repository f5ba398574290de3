"""bnncl export and bnncl device predict / learn / info."""

import inspect
import json
import re

import numpy as np
import pytest

from bnncl.checkpoint import save_checkpoint
from bnncl.cli import build_parser, main
from bnncl.cli.common import DEVICE_BACKENDS, DEVICE_PREDICT_BATCH
from bnncl.models import build_model, preset_config


def test_export_then_device_predict_and_info(capsys, tmp_path):
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
    # the C runtime on the same file: the same predictions (random weights: the logits are far from ties here)
    assert main([*argv[:-1], str(tmp_path / "c.json"), "--runtime", "c"]) == 0
    c_report = json.loads((tmp_path / "c.json").read_text())
    assert c_report["runtime"] == "c" and c_report["predictions"] == report["predictions"]


def test_device_predict_bad_input(one_line_error, tmp_path):
    one_line_error(["device", "predict", str(tmp_path / "none.bnn")], "none.bnn", "no such model file")
    (tmp_path / "bad.bnn").write_bytes(b"PK\x03\x04 truncated")
    one_line_error(["device", "predict", str(tmp_path / "bad.bnn")], "bad.bnn")
    save_checkpoint(tmp_path / "model.pt", build_model(preset_config("fmnist", 10)))
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.bnn")]) == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 32, 32, 3), np.uint8))
    one_line_error(["device", "predict", str(tmp_path / "m.bnn"), "--images", str(tmp_path / "x.npy")],
                   "(N, 28, 28, 1)")
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    one_line_error(["device", "predict", str(tmp_path / "m.bnn"), "--images", str(tmp_path / "x.npy"),
                    "--image-labels", str(tmp_path / "y.npy")], "labels of shape (3,) for 2 images")
    (tmp_path / "t.npy").write_bytes(b"\x93NUMPY truncated")
    one_line_error(["device", "predict", str(tmp_path / "m.bnn"), "--images", str(tmp_path / "t.npy")], "t.npy")


def test_device_learn_writes_results_figures_and_resumes(capsys, one_line_error, data_dir, tmp_path):
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
    one_line_error(argv[:-3] + ["--qb", "12", "--out", str(out)], "state_ar1.bnst", "other settings",
                   "q_b 16")  # the old spelling of --q-b, still accepted
    assert (out / "state_ar1.bnst").read_bytes() == state
    one_line_error(["device", "learn", str(tmp_path / "m.bnn"), "--data", str(data_dir), "--config",
                    str(tmp_path / "none.toml")], "none.toml")
    # the frozen part 3 images at a time: the same learning, recorded, with a smaller peak; 0 images: an error
    chunked = tmp_path / "chunked"
    assert main(argv[:-3] + ["--out", str(chunked), "--frozen-chunk", "3", "--quiet"]) == 0
    other = json.loads((chunked / "result.json").read_text())["runs"][0]
    assert other["options"]["frozen_chunk"] == 3 and run["options"]["frozen_chunk"] is None
    assert other["accuracy"] == run["accuracy"]
    assert other["bytes"]["peak_activations"] < run["bytes"]["peak_activations"]
    one_line_error(argv[:-3] + ["--out", str(tmp_path / "zero"), "--frozen-chunk", "0"], "frozen_chunk",
                   "at least 1")


def test_device_learn_runtime_c_gives_the_python_learners_accuracy(capsys, data_dir, tmp_path):
    """bnncl device learn --runtime c: the same accuracies as --runtime python, its own state file, resumed."""
    save_checkpoint(tmp_path / "model.pt", build_model(preset_config("fmnist", 10)))
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.bnn"), "--lr-layer", "head"]) == 0
    argv = ["device", "learn", str(tmp_path / "m.bnn"), "--data", str(data_dir), "--stream", "nc", "--experiences",
            "2", "--epochs", "1", "--batch-size", "8", "--replay-size", "12", "--replay-batch", "4", "--q-f", "8",
            "--q-b", "16", "--lr-layer", "head", "--quiet"]
    runs = {}
    for runtime in ("python", "c"):
        out = tmp_path / runtime
        assert main([*argv, "--runtime", runtime, "--out", str(out)]) == 0
        runs[runtime] = json.loads((out / "result.json").read_text())["runs"][0]
    assert runs["c"]["options"]["runtime"] == "c" and (tmp_path / "c" / "state_ar1_c.bnls").is_file()
    assert runs["c"]["accuracy"] == runs["python"]["accuracy"]
    state = (tmp_path / "c" / "state_ar1_c.bnls").read_bytes()
    assert main([*argv, "--runtime", "c", "--out", str(tmp_path / "c")]) == 0  # resumes: nothing left to learn
    assert (tmp_path / "c" / "state_ar1_c.bnls").read_bytes() == state
    # bnncl device compare: equal bit for bit (exit 0); a C learner of another seed differs (exit 1)
    capsys.readouterr()
    states = [str(tmp_path / "m.bnn"), str(tmp_path / "python" / "state_ar1.bnst")]
    assert main(["device", "compare", *states, str(tmp_path / "c" / "state_ar1_c.bnls")]) == 0
    assert "equal bit for bit after 2 experiences" in capsys.readouterr().out
    assert main([*argv, "--runtime", "c", "--seed", "1", "--out", str(tmp_path / "c1")]) == 0
    capsys.readouterr()
    assert main(["device", "compare", *states, str(tmp_path / "c1" / "state_ar1_c.bnls")]) == 1
    assert "differ: consolidated rows" in capsys.readouterr().out
    # bnncl device info: the C learner's arena by buffer, the library's figure
    from bnncl.core.options import LearnOptions
    from bnncl.device.clearner import CLearner

    capsys.readouterr()
    assert main(["device", "info", str(tmp_path / "m.bnn")]) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if t.strip().startswith("ar1, 1,500"))
    sizes = {k: int(v.replace(",", "")) for k, v in (f.split() for f in line.split(": ", 1)[1].split(", "))}
    learner = CLearner(tmp_path / "m.bnn", LearnOptions(strategy="ar1", lr_layer="head", q_f=8, q_b=16))
    names = learner.memory.NAMES
    assert list(sizes) == list(names) and sizes["total"] == sum(sizes[k] for k in names[:-1]) + 64  # + alignment
    # the wrapper's learner: the same buffers but the minibatch's, whose bytes hold the saved state in a save: with
    # the 1 MiB the wrapper keeps for its log that is the largest of its three uses
    assert all(sizes[k] == getattr(learner.memory, k) for k in names if k not in ("minibatch", "total"))
    assert learner.memory.minibatch > 1 << 20 > sizes["minibatch"]


def test_device_constants_are_the_runtimes():
    """The CLI repeats two constants of the device runtime (to build its parser without importing numba): they are
    the library's, and they reach the parser; the device's strategies are the protocol's."""
    from bnncl.core.protocol import DEVICE_STRATEGIES
    from bnncl.device.model import Model
    from bnncl.device.ops import BACKENDS

    predict = inspect.signature(Model.predict).parameters
    load = inspect.signature(Model.load).parameters
    assert DEVICE_BACKENDS == BACKENDS and load["backend"].default == DEVICE_BACKENDS[0]
    assert DEVICE_PREDICT_BATCH == predict["batch_size"].default
    parser = build_parser()
    args = parser.parse_args(["device", "predict", "m.bnn"])
    assert (args.backend, args.batch_size) == (BACKENDS[0], DEVICE_PREDICT_BATCH)
    device = next(a for a in parser._actions if a.dest == "command").choices["device"]
    learn = next(a for a in device._actions if a.dest == "device_command").choices["learn"]
    assert next(a for a in learn._actions if a.dest == "strategy").choices == DEVICE_STRATEGIES
