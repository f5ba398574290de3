"""bnncl learn / report: config validation and a tiny end-to-end run on files in the official idx format."""

import json

import pytest

from bnncl.cli import main
from bnncl.core.errors import ConfigError
from bnncl.simulation.experiment import run_experiment, validate
from fixtures import write_idx_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("cfg,message", [
    ({"strategies": ["ar1", "ewc"]}, "unknown strategy 'ewc' (valid: naive, cwr, ar1, joint)"),
    ({"stream": {"type": "nx"}}, "unknown scenario 'nx' (valid: nc, ni, nic, core50)"),
    ({"stream": {"type": "nc", "n_experience": 5}},
     "[stream] of type nc: unknown key n_experience (valid: type, n_experiences, first, seed, order)"),
    ({"learn": {"replay_sise": 10}}, "[learn]: unknown key replay_sise (valid: lr_layer, epochs"),
    ({"learn": {"replay_storage": "int4"}}, "unknown replay_storage 'int4' (valid: bits, float32)"),
    ({"pretrain": {"epoch": 3}}, "[pretrain]: unknown key epoch (valid: epochs"),
    ({"strategy": "ar1"}, "config: unknown key strategy (valid: dataset"),
])
def test_misspelt_or_unknown_config_lists_valid_choices(cfg, message):
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert message in str(e.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fm")
    write_idx_dataset(root / "data", n_train=100, n_test=40, hw=(28, 28), seed=2)
    return root


def _cfg(tiny, out, **kw):
    return {"data": str(tiny / "data"), "out": str(out), "stream": {"type": "nc", "n_experiences": 5},
            "pretrain": {"epochs": 1, "batch_size": 20, "binary_boundary": "block5"},
            "learn": {"epochs": 1, "batch_size": 10, "replay_size": 20}, **kw}


def test_lr_layer_that_does_not_exist(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"no layer 'block99' to put the latent-replay layer at \(valid: block1, "):
        run_experiment(_cfg(tiny, tmp_path / "r", learn={"epochs": 1, "lr_layer": "block99"}), progress=False)


def test_replay_larger_than_the_stream(tiny, tmp_path):
    with pytest.raises(ConfigError, match="replay size 5000 is larger than the 100 training patterns"):
        run_experiment(_cfg(tiny, tmp_path / "r", learn={"epochs": 1, "replay_size": 5000}), progress=False)


def test_learn_and_report_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["learn", "--data", str(tiny / "data"), "--dataset", "fashion-mnist",
            "--strategy", "naive", "cwr", "ar1", "joint",
            "--pretrain-epochs", "1", "--binary-boundary", "block5", "--epochs", "1", "--batch-size", "10",
            "--replay-size", "20", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    res = json.loads((out / "result.json").read_text())
    assert [r["strategy"] for r in res["runs"]] == ["naive", "cwr", "ar1", "joint"]
    for r in res["runs"]:
        assert len(r["accuracy"]) == (1 if r["strategy"] == "joint" else 5)
        assert len(r["accuracy_matrix"]) == len(r["accuracy"]) and len(r["accuracy_matrix"][0]) == 10
    ar1 = res["runs"][2]
    assert ar1["options"]["lr_layer"] == "block5" and ar1["latent_shape"] == [64, 7, 7]
    # 1-bit patterns, int16 labels, and per channel the float32 offset and the float64 sum of the decode scale
    assert ar1["bytes"]["replay_memory"] == 20 * (64 * 7 * 7 // 8) + 20 * 2 + 64 * (4 + 8)
    assert res["runs"][1]["options"]["lr_layer"] == "head"
    for f in ("accuracy.png", "matrix_ar1.png", "report.md", "pretrain/model.pt"):
        assert (out / f).is_file(), f
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The pretrained backbone is reused by a second run (resume finds all epochs done).
    mtime = (out / "pretrain" / "model.pt").stat().st_mtime_ns
    assert main(argv[:-3] + ["--strategy", "cwr", "--out", str(out), "--quiet"]) == 0
    assert (out / "pretrain" / "model.pt").stat().st_mtime_ns == mtime
    capsys.readouterr()
    assert main(["report", str(out), str(out / "result.json"), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert "| nc5 | cwr (run) | head |" in text
    assert (tmp_path / "rep" / "accuracy_nc5.png").is_file()


def test_report_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nothing" in err and "no such result file" in err


def test_config_file_and_flag_override(tiny, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('strategies = ["cwr"]\n[stream]\ntype = "nc"\nn_experiences = 2\n[learn]\nepochs = 1\n'
                    'batch_size = 10\n[pretrain]\nepochs = 1\nbatch_size = 20\n')
    out = tmp_path / "r"
    assert main(["learn", "--config", str(toml), "--data", str(tiny / "data"), "--experiences", "5",
                 "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["stream"]["n_experiences"] == 5 and len(res["runs"][0]["accuracy"]) == 5
    toml.write_text('[learn]\nepoch = 1\n')
    assert main(["learn", "--config", str(toml), "--data", str(tiny / "data"), "--out", str(out), "--quiet"]) == 2


def test_holdout_pretrains_on_instances_the_stream_never_sees(tiny, tmp_path):
    from bnncl.simulation.experiment import build_stream

    cfg = validate(_cfg(tiny, tmp_path / "h", pretrain={"epochs": 1, "batch_size": 20, "holdout": 0.3}))
    stream, held = build_stream(cfg)
    assert len(held) == 30 and sum(len(e) for e in stream.experiences) == 70

    def key(x):
        return {bytes(im) for im in x.reshape(len(x), -1)}

    seen = set().union(*(key(e.data.x) for e in stream.experiences))
    assert not key(held.x) & seen
    res = run_experiment({**cfg, "strategies": ["cwr"]}, progress=False)
    assert "held out" in res["backbone"]["pretrained_on"]


def test_quantized_learning_from_the_command_line(tiny, tmp_path, capsys):
    """--q-f/--q-b/--q-bin reach both variants, are recorded in result.json with the trainable state's bytes, and a
    bad combination is a one-line error."""
    out = tmp_path / "q"
    base = ["learn", "--data", str(tiny / "data"), "--dataset", "fashion-mnist", "--pretrain-epochs", "1",
            "--binary-boundary", "block5", "--epochs", "1", "--batch-size", "10", "--replay-size", "20", "--quiet"]
    argv = base + ["--strategy", "cwr", "ar1", "--q-f", "8", "--q-b", "16", "--q-bin", "8", "--out", str(out)]
    assert main(argv) == 0
    cwr, ar1 = json.loads((out / "result.json").read_text())["runs"]
    for r in (cwr, ar1):
        assert (r["options"]["q_f"], r["options"]["q_b"], r["options"]["q_bin"]) == (8, 16, 8)
        assert r["bytes"]["trainable_state"] <= r["bytes"]["trainable_parameters_fp32"] / 2
        assert set(r["gradient_relative_error"]) >= {"head"}
    assert cwr["bytes"]["trainable_state"] == 10 * 128 * 2  # the head at 16 bits
    assert {"block5.conv", "block6.conv"} <= set(ar1["gradient_relative_error"])
    capsys.readouterr()
    assert main(base + ["--strategy", "cwr", "--q-f", "16", "--q-b", "8", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "q_b (backward bits, 8) must be at least q_f (forward bits, 16)" in err
