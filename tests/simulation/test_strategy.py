"""The simulation's learner template (:mod:`bnncl.simulation.strategy`) and its plugins (CWR*, latent replay), on a
tiny backbone and a tiny NC stream. ``run_stream``'s result: tests/simulation/test_run.py; the options' validation:
tests/core/test_options.py."""

import copy
import math

import numpy as np
import pytest
import torch

from bnncl.core.errors import ConfigError
from bnncl.core.memory import LatentMemory
from bnncl.simulation import run as run_mod
from bnncl.simulation.strategy import CWRPlugin, Plugin, ReplayPlugin, build_strategy
from fixtures import float32_sum_bound, run_capturing, sim_options, tiny_nc_stream, tiny_sim_model

STRATEGIES = ("naive", "cwr", "ar1", "joint")
# Tiny tensors: intra-op threading only adds overhead (and makes the timing depend on the machine's load).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN, TEST, STREAM = tiny_nc_stream()


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
    model = tiny_sim_model()
    before = copy.deepcopy(model.state_dict())
    _, learner = run_capturing(monkeypatch, model, sim_options(strategy), STREAM)
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
    _, learner = run_capturing(monkeypatch, tiny_sim_model(), sim_options(strategy), STREAM)
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
    learner = build_strategy(tiny_sim_model(), sim_options("ar1", replay_mix="proportional"))
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
    learner = build_strategy(tiny_sim_model(), sim_options(strategy, epochs=2, batch_size=10))
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

def test_unknown_lr_layer():
    valid = ", ".join(tiny_sim_model().split_points)
    assert "block2" in valid and "head" in valid
    with pytest.raises(ConfigError, match=r"no layer 'block7'.*\(valid: " + valid + r"\)"):
        build_strategy(tiny_sim_model(), sim_options("ar1", lr_layer="block7"))
    with pytest.raises(ConfigError, match=r"no layer 'stem'.*\(valid: " + valid + r"\)"):
        run_mod.run_stream(tiny_sim_model(), STREAM, sim_options("naive", lr_layer="stem"), progress=False)


def test_ar1_needs_a_memory():
    with pytest.raises(ConfigError, match="replay_size must be at least 1"):
        build_strategy(tiny_sim_model(), sim_options("ar1", replay_size=0))


# (f) ---------------------------------------------------------------------------------------------------------------

TIMING = ("seconds_per_experience", "seconds_per_step_median")


@pytest.mark.parametrize("strategy", ["naive", "ar1"])
def test_same_seed_same_result(monkeypatch, strategy):
    r1, l1 = run_capturing(monkeypatch, tiny_sim_model(), sim_options(strategy), STREAM)
    r2, l2 = run_capturing(monkeypatch, tiny_sim_model(), sim_options(strategy), STREAM)
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
    _, l3 = run_capturing(monkeypatch, tiny_sim_model(), sim_options(strategy, seed=4), STREAM)
    assert not torch.equal(l3.model.layers["head"].weight, l1.model.layers["head"].weight)


def test_fixed_mix_adds_replay_batch_to_every_step():
    learner = build_strategy(tiny_sim_model(), sim_options("ar1", replay_mix="fixed", batch_size=6, replay_batch=5))
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
