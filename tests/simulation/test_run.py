"""One strategy over one stream (:mod:`bnncl.simulation.run`): ``check_run``'s refusals, before anything is built
or trained; ``joint_experience``; and ``run_stream``'s result, on a tiny backbone and a tiny NC stream.

Oracles: the stream's own experiences and training set (the joint experience); the test counts (the overall accuracy
is the per-class accuracies weighted by them); the learner's own predictions (the final accuracy); the class order
(when each class was first seen); byte counts computed by hand."""

import json

import numpy as np
import pytest

from bnncl.core.errors import ConfigError
from bnncl.data.arrays import LabelledArrays
from bnncl.data.scenarios import nc
from bnncl.simulation import run as run_mod
from bnncl.simulation.run import check_run, joint_experience
from fixtures import run_capturing, sim_options, tiny_nc_stream, tiny_sim_model

STRATEGIES = ("naive", "cwr", "ar1", "joint")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: threads only add overhead

TRAIN, TEST, STREAM = tiny_nc_stream()


# -- check_run ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["head classes", "input shape", "lr layer", "replay size"])
def test_check_run_refuses_a_mismatch_before_a_learner_is_built(monkeypatch, case):
    model, opts = tiny_sim_model(), sim_options("ar1")
    total = len(TRAIN)
    if case == "head classes":
        model, match = tiny_sim_model(num_classes=5), "the model's head has 5 classes, the stream 4"
    elif case == "input shape":
        model = tiny_sim_model(input_shape=(8, 8, 3))
        match = r"the model takes \(8, 8, 3\) images, the stream has \(8, 8, 1\)"
    elif case == "lr layer":
        opts, match = sim_options("ar1", lr_layer="stem"), "no layer 'stem' to put the latent-replay layer at"
    else:
        opts = sim_options("ar1", replay_size=total + 1)
        match = f"replay size {total + 1} is larger than the {total} training patterns of {STREAM.name}$"
    with pytest.raises(ConfigError, match=match):
        check_run(model, STREAM, opts)
    built = []
    monkeypatch.setattr(run_mod, "build_strategy", lambda *args: built.append(args))
    with pytest.raises(ConfigError, match=match):
        run_mod.run_stream(model, STREAM, opts, progress=False)
    assert not built, "run_stream built a learner before refusing"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_check_run_accepts_a_memory_as_large_as_the_stream(strategy):
    """The memory may hold every training pattern (the refusal is for more than that)."""
    assert check_run(tiny_sim_model(), STREAM, sim_options(strategy, replay_size=len(TRAIN))) is None


def test_replay_larger_than_stream():
    total = len(TRAIN)
    with pytest.raises(ConfigError, match=rf"replay size {total + 1} is larger than the {total} training patterns"):
        run_mod.run_stream(tiny_sim_model(), STREAM, sim_options("ar1", replay_size=total + 1), progress=False)
    # other strategies do not use the memory and accept it
    run_mod.run_stream(tiny_sim_model(), STREAM, sim_options("cwr", replay_size=total + 1, epochs=1), progress=False)


# -- joint_experience -----------------------------------------------------------------------------------------------

def test_joint_experience_is_every_experience_in_order():
    stream = nc(TRAIN, TEST, n_experiences=4, seed=1)
    joint = joint_experience(stream)
    assert joint.index == 0 and len(joint) == len(TRAIN) == sum(len(e) for e in stream.experiences) == 48
    assert joint.data.class_names == TRAIN.class_names and joint.data.name == "nc4 joint"
    start = 0
    for e in stream.experiences:
        np.testing.assert_array_equal(joint.data.x[start:start + len(e)], e.data.x)
        np.testing.assert_array_equal(joint.data.y[start:start + len(e)], e.data.y)
        start += len(e)
    # the training set itself: each image once, with its label (NC splits it by class)
    def pairs(d):
        return sorted(zip(d.y.tolist(), (image.tobytes() for image in d.x)))

    assert pairs(joint.data) == pairs(TRAIN)
    assert joint.classes == [0, 1, 2, 3]


# -- run_stream -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_run_stream_result(monkeypatch, strategy):
    r, learner = run_capturing(monkeypatch, tiny_sim_model(), sim_options(strategy), STREAM)
    n_exp = 1 if strategy == "joint" else len(STREAM)
    assert len(r["accuracy"]) == n_exp and r["final_accuracy"] == r["accuracy"][-1]
    matrix = np.array([[np.nan if v is None else v for v in row] for row in r["accuracy_matrix"]])
    assert matrix.shape == (n_exp, 4)
    # overall accuracy = per-class accuracies weighted by the test counts
    counts = np.bincount(TEST.y, minlength=4)
    for acc, row in zip(r["accuracy"], matrix):
        assert acc == pytest.approx(float((row * counts).sum() / counts.sum()), abs=1e-12)
    # the learner's predictions reproduce the final row
    pred = learner.predict(TEST.x)
    assert r["final_accuracy"] == pytest.approx(float((pred == TEST.y).mean()), abs=0)
    expected_seen = [0, 0, 0, 0] if strategy == "joint" else [
        next(i for i, e in enumerate(STREAM.experiences) if c in e.classes) for c in range(4)]
    assert r["first_seen"] == expected_seen
    assert len(r["seconds_per_experience"]) == n_exp
    keys = {"naive": {"trainable_parameters_fp32"}, "joint": {"trainable_parameters_fp32"},
            "cwr": {"trainable_parameters_fp32", "consolidated_rows"},
            "ar1": {"trainable_parameters_fp32", "consolidated_rows", "replay_memory"}}[strategy]
    assert set(r["bytes"]) == keys
    n_trainable = sum(p.numel() for p in learner.trainable.parameters())
    assert r["bytes"]["trainable_parameters_fp32"] == 4 * n_trainable
    if "consolidated_rows" in keys:
        assert r["bytes"]["consolidated_rows"] == 4 * 4 * 8 + 4 * 4  # 4 classes x 8 features + int32 counts
    if strategy == "ar1":
        assert r["latent_shape"] == [4, 8, 8]  # block2's input: block1's output at 8x8
        # 8 slots of 4x8x8 bits, int16 labels, and per channel a float32 offset and a float64 sum for the scale
        assert r["bytes"]["replay_memory"] == 8 * (4 * 8 * 8 // 8) + 8 * 2 + 4 * (4 + 8)
    assert r["stream"]["experiences"] == len(STREAM)
    assert r["options"]["lr_layer"] == learner.lr_layer


def test_run_stream_has_a_row_per_experience_and_none_for_a_class_without_test_images():
    """Four experiences of one class each, a test set without class 3: four rows of four entries, class 3's None in
    every row (JSON has no NaN), each class first seen where the class order puts it."""
    keep = TEST.y != 3
    test = LabelledArrays(TEST.x[keep], TEST.y[keep], TEST.class_names, "test without d")
    stream = nc(TRAIN, test, n_experiences=4, seed=0)
    r = run_mod.run_stream(tiny_sim_model(), stream, sim_options("naive", epochs=1), progress=False)
    assert len(r["accuracy"]) == len(r["accuracy_matrix"]) == len(r["seconds_per_experience"]) == 4
    assert r["stream"]["sizes"] == [12, 12, 12, 12] and r["stream"]["test"] == 12
    for row in r["accuracy_matrix"]:
        assert len(row) == 4 and row[3] is None
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in row[:3]), row
    assert r["first_seen"] == [stream.info["class_order"].index(c) for c in range(4)]
    json.dumps(r, allow_nan=False)
