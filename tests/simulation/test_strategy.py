"""The learner template, its plugins (CWR*, latent replay) and run_stream, on a tiny backbone and a tiny NC stream."""

import copy
import math

import numpy as np
import pytest
import torch

from bnncl.core.errors import ConfigError
from bnncl.core.memory import LatentMemory
from bnncl.data.arrays import LabelledArrays
from bnncl.data.scenarios import nc
from bnncl.models import BackboneConfig, build_model
from bnncl.simulation import run as run_mod
from bnncl.simulation.strategy import CWRPlugin, LearnOptions, Plugin, ReplayPlugin, build_strategy
from fixtures import float32_sum_bound

CFG = BackboneConfig(input_shape=(8, 8, 1), num_classes=4, stem_channels=4, stages=((4, 1, 1), (8, 1, 2)))
STRATEGIES = ("naive", "cwr", "ar1", "joint")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors: intra-op threading only adds overhead (and makes the timing depend on the machine's load).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic(per_class, seed, name):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), per_class)
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(len(y), 8, 8, 1), dtype=np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c: 2 * c + 2] = 220  # a class-dependent bright band
    return LabelledArrays(x, y.astype(np.int64), ("a", "b", "c", "d"), name)


TRAIN, TEST = synthetic(12, 0, "train"), synthetic(4, 1, "test")
STREAM = nc(TRAIN, TEST, n_experiences=2, seed=0)


def make_model(seed=0):
    torch.manual_seed(seed)
    return build_model(CFG)


def options(strategy, **kw):
    base = dict(strategy=strategy, epochs=2, batch_size=8, lr=0.05, replay_size=8, seed=3)
    return LearnOptions(**{**base, **kw})


def run_capturing(monkeypatch, model, opts, stream=STREAM):
    """run_stream, keeping hold of the learner it builds (it trains a deep copy of ``model``)."""
    captured = {}
    original = run_mod.build_strategy

    def wrapper(m, o):
        captured["learner"] = original(m, o)
        return captured["learner"]

    monkeypatch.setattr(run_mod, "build_strategy", wrapper)
    result = run_mod.run_stream(model, stream, opts, progress=False)
    return result, captured["learner"]


class Recorder(Plugin):
    def __init__(self):
        self.events, self.cur, self.steps = [], [], []

    def before_experience(self, learner, exp):
        self.events.append(("before_experience", exp.index))
        self.cur.append(learner.cur.copy())

    def before_step(self, learner, x, y):
        self.events.append(("before_step", learner.exp.index))
        self.steps.append((x.shape, y.clone()))
        return x, y

    def after_step(self, learner):
        self.events.append(("after_step", learner.exp.index))

    def after_experience(self, learner, exp):
        self.events.append(("after_experience", exp.index))

    def before_eval(self, learner):
        self.events.append(("before_eval", None))


# (a) ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_frozen_part_never_changes_trainable_does(monkeypatch, strategy):
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    _, learner = run_capturing(monkeypatch, model, options(strategy))
    # run_stream trains a copy: the caller's model is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    trained = learner.model.state_dict()
    frozen_names = [n for n in learner.frozen._modules]
    trainable_names = [n for n in learner.trainable._modules]
    assert frozen_names and trainable_names
    frozen_keys = [k for k in trained if k.split(".")[1] in frozen_names]
    assert any("running_mean" in k for k in frozen_keys)  # BN statistics of the frozen part are checked too
    for k in frozen_keys:
        assert torch.equal(trained[k], before[k]), f"{strategy}: frozen {k} changed"
    for name, p in learner.trainable.named_parameters():
        key = f"layers.{name}"
        assert not torch.equal(p.detach(), before[key]), f"{strategy}: trainable {key} did not change"
    expected_lr = "head" if strategy == "cwr" else "block2"
    assert learner.lr_layer == expected_lr


# (b) ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["cwr", "ar1"])
def test_head_holds_consolidated_rows_after_run(monkeypatch, strategy):
    _, learner = run_capturing(monkeypatch, make_model(), options(strategy))
    plugins = [p for p in learner.plugins if isinstance(p, CWRPlugin)]
    assert len(plugins) == 1
    rows = plugins[0].cwr.inference_rows()
    head = learner.model.layers["head"].weight.detach().numpy()
    np.testing.assert_array_equal(head, rows.astype(np.float32))
    assert np.abs(rows).sum() > 0
    if strategy == "cwr":
        # No replay: every class consolidated once from exactly its training patterns.
        np.testing.assert_array_equal(plugins[0].cwr.past, np.bincount(TRAIN.y, minlength=4))
        # NC without replay: each experience's classes are new, so their rows are w = tw - a, centred together.
        for e in STREAM.experiences:
            present = e.classes
            # zero by construction; computed in the rows' precision, over n entries: gamma_n of the mean |row|
            unit = np.finfo(rows.dtype).eps / 2
            assert abs(rows[present].mean()) <= float32_sum_bound(np.abs(rows[present]).mean(), rows[present].size,
                                                                  unit)


# (c) ---------------------------------------------------------------------------------------------------------------

def test_ar1_cur_counts_replayed_patterns():
    learner = build_strategy(make_model(), options("ar1", replay_mix="proportional"))
    rec = Recorder()
    learner.plugins.append(rec)  # after ReplayPlugin and CWRPlugin: sees the cur they use
    replay = next(p for p in learner.plugins if isinstance(p, ReplayPlugin))
    cwr = next(p for p in learner.plugins if isinstance(p, CWRPlugin))
    assert learner.plugins.index(replay) < learner.plugins.index(cwr)
    memory_counts = []
    for exp in STREAM.experiences:
        memory_counts.append(replay.memory.class_counts(4).copy())
        learner.train_experience(exp)
    e0, e1 = STREAM.experiences
    np.testing.assert_array_equal(rec.cur[0], np.bincount(e0.data.y, minlength=4))  # memory empty
    assert memory_counts[1].sum() == 8
    assert set(np.flatnonzero(memory_counts[1])) <= set(e0.classes)
    np.testing.assert_array_equal(rec.cur[1], np.bincount(e1.data.y, minlength=4) + memory_counts[1])
    # CWR* consolidated with those counts.
    np.testing.assert_array_equal(cwr.cwr.past, rec.cur[0] + rec.cur[1])
    # Proportional mix in experience 2: m = 8 stored, n = 24 new, batch 8 -> round(8 * 8 / 32) = 2 replayed per step,
    # 6 new; ceil(24 / 6) = 4 steps per epoch.
    steps1 = [s for s, ev in zip(rec.steps, [e for e in rec.events if e[0] == "before_step"]) if ev[1] == 1]
    assert len(steps1) == 2 * math.ceil(24 / 6)
    for shape, y in steps1:
        assert shape[0] == 8 and shape[1:] == (4, 8, 8)
        assert int(np.isin(y.numpy(), e0.classes).sum()) == 2  # replayed (old classes) vs new (NC: disjoint)


# (d) ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["naive", "cwr"])
def test_hooks_called_in_order(strategy):
    learner = build_strategy(make_model(), options(strategy, epochs=2, batch_size=10))
    rec = Recorder()
    learner.plugins.append(rec)
    for exp in STREAM.experiences:
        learner.train_experience(exp)
    learner.predict(TEST.x)
    expected = []
    for exp in STREAM.experiences:
        steps = 2 * math.ceil(len(exp) / 10)
        expected += [("before_experience", exp.index)]
        expected += [ev for _ in range(steps) for ev in (("before_step", exp.index), ("after_step", exp.index))]
        expected += [("after_experience", exp.index)]
    expected += [("before_eval", None)]
    assert rec.events == expected
    # before_step sees only the experience's own classes (no replay in these strategies)
    first_steps = rec.steps[: 2 * math.ceil(len(STREAM.experiences[0]) / 10)]
    for _, y in first_steps:
        assert set(y.tolist()) <= set(STREAM.experiences[0].classes)


# (e) ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_run_stream_result(monkeypatch, strategy):
    r, learner = run_capturing(monkeypatch, make_model(), options(strategy))
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


# (f) ---------------------------------------------------------------------------------------------------------------

def test_unknown_strategy():
    with pytest.raises(ConfigError, match=r"unknown strategy 'ewc' \(valid: naive, cwr, ar1, joint\)"):
        LearnOptions(strategy="ewc")
    with pytest.raises(ConfigError, match=r"valid: naive, cwr, ar1, joint"):
        LearnOptions.from_dict({"strategy": "replay"})


def test_unknown_lr_layer():
    valid = ", ".join(make_model().split_points)
    assert "block2" in valid and "head" in valid
    with pytest.raises(ConfigError, match=r"no layer 'block7'.*\(valid: " + valid + r"\)"):
        build_strategy(make_model(), options("ar1", lr_layer="block7"))
    with pytest.raises(ConfigError, match=r"no layer 'stem'.*\(valid: " + valid + r"\)"):
        run_mod.run_stream(make_model(), STREAM, options("naive", lr_layer="stem"), progress=False)


def test_replay_larger_than_stream():
    total = len(TRAIN)
    with pytest.raises(ConfigError, match=rf"replay size {total + 1} is larger than the {total} training patterns"):
        run_mod.run_stream(make_model(), STREAM, options("ar1", replay_size=total + 1), progress=False)
    # other strategies do not use the memory and accept it
    run_mod.run_stream(make_model(), STREAM, options("cwr", replay_size=total + 1, epochs=1), progress=False)


def test_misspelt_option_key():
    with pytest.raises(ConfigError, match=r"unknown learning option epoch \(valid: strategy, lr_layer, epochs, lr, "):
        LearnOptions.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"replay_sise, stratgy \(valid: .*replay_size"):
        LearnOptions.from_dict({"stratgy": "cwr", "replay_sise": 3})
    assert LearnOptions.from_dict({"epochs": 3}).epochs == 3


@pytest.mark.parametrize("kw,match", [(dict(replay_storage="fp16"), r"replay_storage 'fp16' \(valid: bits, float32\)"),
                                      (dict(replay_update="fifo"), r"replay_update 'fifo' \(valid: ar1, balanced\)"),
                                      (dict(replay_mix="half"), r"replay_mix 'half' \(valid: proportional, fixed\)"),
                                      (dict(epochs=0), "epochs must be at least 1"),
                                      (dict(lr=float("nan")), "learning rate must be a positive number")])
def test_other_bad_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        LearnOptions(**kw)


def test_ar1_needs_a_memory():
    with pytest.raises(ConfigError, match="replay_size must be at least 1"):
        build_strategy(make_model(), options("ar1", replay_size=0))


# (g) ---------------------------------------------------------------------------------------------------------------

TIMING = ("seconds_per_experience", "seconds_per_step_median")


@pytest.mark.parametrize("strategy", ["naive", "ar1"])
def test_same_seed_same_result(monkeypatch, strategy):
    r1, l1 = run_capturing(monkeypatch, make_model(), options(strategy))
    r2, l2 = run_capturing(monkeypatch, make_model(), options(strategy))
    assert {k: v for k, v in r1.items() if k not in TIMING} == {k: v for k, v in r2.items() if k not in TIMING}
    s1, s2 = l1.model.state_dict(), l2.model.state_dict()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    if strategy == "ar1":
        m1 = next(p for p in l1.plugins if isinstance(p, ReplayPlugin)).memory
        m2 = next(p for p in l2.plugins if isinstance(p, ReplayPlugin)).memory
        assert isinstance(m1, LatentMemory)
        np.testing.assert_array_equal(m1.data, m2.data)
        np.testing.assert_array_equal(m1.labels, m2.labels)
    # a different seed trains differently
    _, l3 = run_capturing(monkeypatch, make_model(), options(strategy, seed=4))
    assert not torch.equal(l3.model.layers["head"].weight, l1.model.layers["head"].weight)


def test_fixed_mix_adds_replay_batch_to_every_step():
    learner = build_strategy(make_model(), options("ar1", replay_mix="fixed", batch_size=6, replay_batch=5))
    rec = Recorder()
    learner.plugins.append(rec)
    for exp in STREAM.experiences:
        learner.train_experience(exp)
    e0 = STREAM.experiences[0]
    sizes = [[shape[0] for shape, _ in rec.steps[:8]], [shape[0] for shape, _ in rec.steps[8:]]]
    assert sizes[0] == [6, 6, 6, 6] * 2  # experience 1: memory empty, 24 new in steps of 6
    assert sizes[1] == [6 + 5] * 8  # experience 2: 6 new + 5 replayed (of the 8 stored)
    for _, y in rec.steps[8:]:
        assert int(np.isin(y.numpy(), e0.classes).sum()) == 5
