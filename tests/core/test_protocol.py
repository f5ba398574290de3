"""The experience protocol both learners share (:mod:`bnncl.core.protocol`): the replay mix (``plan_experience``),
the minibatches of an epoch, the named random generators, the latent-replay layer's default and check, and the phase
order of ``ExperienceLoop.run_experience``.

Oracles: the replay mix's numbers computed by hand here (docs/method.md §4: ``fixed`` adds ``replay_batch`` replayed
patterns to every step; ``proportional`` replays ``round(b m / (n + m))`` of a step of ``b``, at most ``b - 1``), and
the class counts of the experience plus those of the memory; NumPy generators seeded by hand with ``seed +
SEED_OFFSETS[name]``; block numbers counted by hand from the stages; a subclass of ``ExperienceLoop`` that records
what it is called with, against a shuffle generator mirrored here."""

import math

import numpy as np
import pytest

from bnncl.core.errors import ConfigError
from bnncl.core.memory import LatentMemory
from bnncl.core.options import LearnOptions
from bnncl.core.protocol import (
    SEED_OFFSETS,
    ExperienceLoop,
    ExperiencePlan,
    backbone_lr_layer,
    check_lr_layer,
    default_lr_layer,
    generator,
    plan_experience,
)
from bnncl.core.rng import Pcg32


class CountsOnly:
    """A memory holding ``counts[c]`` patterns of class c: all that plan_experience reads of one."""

    def __init__(self, counts):
        self.counts = np.asarray(counts, np.int64)

    def __len__(self):
        return int(self.counts.sum())

    def class_counts(self, num_classes):
        assert num_classes == len(self.counts)
        return self.counts.copy()


LABELS = np.array([0, 1, 1, 2, 2, 2, 0, 1, 2, 2])  # 10 new patterns: 2 of class 0, 3 of class 1, 5 of class 2


# -- plan_experience ------------------------------------------------------------------------------------------------

def test_fixed_mix_replays_replay_batch_beside_batch_size_new_patterns():
    memory = CountsOnly([0, 0, 0, 2, 3])  # 5 stored, of the classes 3 and 4
    plan = plan_experience(LABELS, 5, LearnOptions(batch_size=4, replay_mix="fixed", replay_batch=3), memory)
    assert (plan.patterns, plan.n_replay, plan.per_step, plan.steps) == (10, 3, 4, 3)  # ceil(10 / 4) = 3 steps
    assert plan.cur.tolist() == [2, 3, 5, 2, 3]  # the experience's counts, plus the memory's


def test_fixed_mix_replays_replay_batch_even_when_the_memory_holds_fewer():
    """The plan asks for ``replay_batch``; the memory's ``sample`` gives what it has (see the loop's test)."""
    plan = plan_experience(LABELS, 3, LearnOptions(batch_size=4, replay_mix="fixed", replay_batch=128),
                           CountsOnly([1, 0, 1]))
    assert (plan.n_replay, plan.per_step) == (128, 4)
    assert plan.cur.tolist() == [3, 3, 6]


@pytest.mark.parametrize("n,m,b,replayed", [
    (10, 30, 8, 6),  # 8 * 30 / 40 = 6
    (24, 8, 8, 2),  # 8 * 8 / 32 = 2 (the strategy test's experience 2)
    (10, 5, 4, 1),  # 4 * 5 / 15 = 1.33 -> 1
    (10, 20, 4, 3),  # 4 * 20 / 30 = 2.67 -> 3
    (5, 5, 5, 2),  # 5 * 5 / 10 = 2.5 -> 2: Python's round, half to even
    (7, 7, 3, 2),  # 3 * 7 / 14 = 1.5 -> 2: half to even
    (3, 100, 8, 7),  # 8 * 100 / 103 = 7.77 -> 8, capped at b - 1 = 7: one new pattern per step
    (1, 1, 1, 0),  # b = 1: no room for replay (1 * 1 / 2 = 0.5 -> 0, and the cap is 0)
    (40, 1, 8, 0),  # 8 * 1 / 41 = 0.2 -> 0
])
def test_proportional_mix_replays_the_memorys_share_of_a_step(n, m, b, replayed):
    labels = np.arange(n) % 2
    memory = CountsOnly([0, 0, m])
    plan = plan_experience(labels, 3, LearnOptions(batch_size=b, replay_mix="proportional"), memory)
    assert plan.n_replay == replayed and plan.per_step == b - replayed
    assert plan.steps == math.ceil(n / (b - replayed))
    assert plan.cur.tolist() == [(n + 1) // 2, n // 2, m]


@pytest.mark.parametrize("mix", ["fixed", "proportional"])
def test_an_empty_memory_or_none_replays_nothing(mix):
    options = LearnOptions(batch_size=4, replay_mix=mix, replay_batch=3)
    for memory in (None, CountsOnly([0, 0, 0]), LatentMemory(8, (2,), "float32")):
        plan = plan_experience(LABELS, 3, options, memory)
        assert (plan.n_replay, plan.per_step, plan.steps) == (0, 4, 3), memory
        assert plan.cur.tolist() == [2, 3, 5]


def test_cur_counts_classes_the_experience_does_not_hold():
    plan = plan_experience(np.array([4, 4]), 6, LearnOptions(batch_size=2), CountsOnly([1, 0, 0, 0, 0, 2]))
    assert plan.cur.tolist() == [1, 0, 0, 0, 2, 2] and plan.cur.dtype.kind == "i"


# -- ExperiencePlan.minibatches --------------------------------------------------------------------------------------

@pytest.mark.parametrize("patterns,per_step", [(10, 4), (12, 4), (3, 8), (1, 1), (7, 1), (25, 6)])
def test_minibatches_cover_every_index_once_per_epoch(patterns, per_step):
    plan = ExperiencePlan(patterns, np.zeros(2, np.int64), 0, per_step)
    order = np.random.default_rng(patterns).permutation(patterns)
    batches = list(plan.minibatches(order))
    assert len(batches) == plan.steps == -(-patterns // per_step)
    assert [len(b) for b in batches[:-1]] == [per_step] * (len(batches) - 1)
    assert len(batches[-1]) == patterns - (len(batches) - 1) * per_step > 0
    np.testing.assert_array_equal(np.concatenate(batches), order)  # in the order given, each index once
    assert sorted(np.concatenate(batches).tolist()) == list(range(patterns))


# -- generators ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 3, 12345])
def test_generator_is_pcg32_seeded_with_seed_plus_the_named_offset(seed):
    """(The draws themselves: tests/core/test_rng.py, against the reference PCG32 and the specification.)"""
    assert set(SEED_OFFSETS) == {"shuffle", "replay", "quantizer"}
    assert len(set(SEED_OFFSETS.values())) == 3  # no two generators share a stream
    draws = {}
    for name, offset in SEED_OFFSETS.items():
        ours = generator(seed, name).u32(6)
        np.testing.assert_array_equal(ours, Pcg32(seed + offset, offset).u32(6))
        draws[name] = tuple(ours.tolist())
    assert len(set(draws.values())) == 3


def test_generator_refuses_a_name_it_does_not_know():
    with pytest.raises(KeyError):
        generator(0, "dropout")


# -- the latent-replay layer -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("boundary,stages,expected", [
    ("block5", ((32, 2, 2), (64, 2, 2), (128, 2, 2)), "block5"),  # the binary boundary wins
    (None, ((32, 2, 2), (64, 2, 2), (128, 2, 2)), "block5"),  # 2 + 2 blocks before the last stage
    (None, ((4, 1, 1), (8, 1, 2)), "block2"),  # 1 block before it
    (None, ((16, 3, 1), (32, 1, 2), (64, 4, 2)), "block5"),  # 3 + 1
    (None, ((16, 3, 1),), "block1"),  # one stage: its first block
    ("", ((4, 1, 1), (8, 1, 2)), "block2"),  # an empty boundary is none
])
def test_backbone_lr_layer(boundary, stages, expected):
    assert backbone_lr_layer(boundary, stages) == expected


@pytest.mark.parametrize("strategy,expected", [("cwr", "head"), ("ar1", "block4"), ("naive", "block4"),
                                               ("joint", "block4")])
def test_default_lr_layer_is_the_head_for_cwr_alone(strategy, expected):
    assert default_lr_layer(strategy, "block4") == expected


def test_check_lr_layer_returns_the_layer_or_lists_the_valid_ones():
    points = ["block2", "block3", "head"]
    assert check_lr_layer("block3", points) == "block3"
    with pytest.raises(ConfigError, match=r"^model\.bnn: no layer 'block9' to put the latent-replay layer at "
                                          r"\(valid: block2, block3, head\)$"):
        check_lr_layer("block9", points, "model.bnn: ")
    with pytest.raises(ConfigError, match=r"^no layer 'stem' "):
        check_lr_layer("stem", points)


# -- ExperienceLoop.run_experience -----------------------------------------------------------------------------------

class Recording(ExperienceLoop):
    """A learner that records its phases: new patterns come in as their own index (>= 0), stored ones as negative
    values, so each step's minibatch shows which new patterns it held and how many were replayed."""

    def __init__(self, options, memory, num_classes=5):
        self.options, self.memory, self.num_classes = options, memory, num_classes
        self.shuffle_rng, self.replay_rng = generator(options.seed, "shuffle"), generator(options.seed, "replay")
        self.events, self.new = [], []

    def begin_experience(self, labels):
        self.events.append(("begin", len(labels)))
        return plan_experience(labels, self.num_classes, self.options, self.memory)

    def step(self, x, y):
        x = x[:, 0]
        new, old = x[x >= 0].astype(np.int64), x[x < 0]
        assert len(set(old.tolist())) == len(old), "a pattern replayed twice in one step"
        self.new.append(new)
        self.events.append(("step", len(new), len(old)))
        return 0.5 * len(self.new)

    def end_experience(self, plan, labels):
        self.events.append(("end", plan.patterns))


def _memory(labels):
    """A float32 memory holding one pattern per label: the pattern valued -(j + 1) with ``labels[j]``."""
    memory = LatentMemory(len(labels), (1,), "float32")
    memory.update(-(np.arange(len(labels), dtype=np.float32) + 1)[:, None], np.asarray(labels), "ar1",
                  np.random.default_rng(0))
    assert len(memory) == len(labels)
    return memory


@pytest.mark.parametrize("mix,memory_labels,new_sizes,replayed", [
    ("fixed", [], [4, 4, 2], 0),  # first experience: nothing stored, nothing replayed
    ("fixed", [3, 3, 4, 4, 4], [4, 4, 2], 3),  # replay_batch 3 beside 4 new
    ("fixed", [3, 4], [4, 4, 2], 2),  # replay_batch 3, but the memory holds 2: all of them
    ("proportional", [3, 3, 4, 4, 4], [3, 3, 3, 1], 1),  # round(4 * 5 / 15) = 1 of a step of 4
])
def test_run_experience_calls_begin_then_every_step_then_end(mix, memory_labels, new_sizes, replayed):
    options = LearnOptions(epochs=2, batch_size=4, replay_mix=mix, replay_batch=3, seed=11)
    learner = Recording(options, _memory(memory_labels) if memory_labels else None)
    seconds = []
    images = np.arange(len(LABELS), dtype=np.float32)[:, None]  # new pattern i is the value i

    plan, losses = learner.run_experience(LABELS, lambda idx: images[idx], on_step=seconds.append)

    steps = [("step", k, replayed) for k in new_sizes] * options.epochs
    assert learner.events == [("begin", 10), *steps, ("end", 10)]
    assert plan.n_replay == (0 if not memory_labels else 3 if mix == "fixed" else 1)
    assert plan.cur.tolist() == (np.bincount(LABELS, minlength=5) + np.bincount(memory_labels, minlength=5)).tolist()
    assert losses == [0.5 * (i + 1) for i in range(len(steps))]  # what step returned, in order
    assert len(seconds) == len(steps) and all(s >= 0 for s in seconds)
    # each epoch's new patterns: the mirrored shuffle's permutation, cut into the plan's minibatches
    mirror = generator(options.seed, "shuffle")
    per_epoch = len(new_sizes)
    for epoch in range(options.epochs):
        order = mirror.permutation(len(LABELS))
        np.testing.assert_array_equal(np.concatenate(learner.new[epoch * per_epoch:(epoch + 1) * per_epoch]), order)


def test_run_experience_passes_the_labels_of_the_minibatch():
    """Each step's labels are those of its new patterns, then those of the replayed ones."""
    stored_labels = np.array([3, 3, 4, 4, 4])
    memory = _memory(stored_labels)
    seen = []

    class Labels(Recording):
        def step(self, x, y):
            x = x[:, 0]
            new = x >= 0
            np.testing.assert_array_equal(y[new], LABELS[x[new].astype(np.int64)])
            stored = (-x[~new] - 1).astype(np.int64)  # the value -(j + 1) is the pattern stored with label j
            np.testing.assert_array_equal(y[~new], stored_labels[stored])
            assert new[:new.sum()].all(), "replayed patterns before new ones"
            seen.append(len(x))

    learner = Labels(LearnOptions(epochs=1, batch_size=4, replay_mix="fixed", replay_batch=3, seed=2), memory)
    images = np.arange(len(LABELS), dtype=np.float32)[:, None]
    learner.run_experience(LABELS, lambda idx: images[idx])
    assert seen == [7, 7, 5]
