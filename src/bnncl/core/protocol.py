"""The experience protocol: what the simulation's strategy (:class:`bnncl.simulation.strategy.Strategy`) and the
device's learner (:class:`bnncl.device.Learner`) both do with one experience (docs/method.md §6), drawn once here:

    plan = begin_experience(labels)     # cur: patterns per class, replayed ones included; the replay mix;
                                        # CWR* loads the consolidated rows of the present classes into the head
    for epoch in range(options.epochs):
        order = shuffle.permutation(plan.patterns)
        for idx in plan.minibatches(order):
            x, y = new_batch(idx), labels[idx]          # the frozen part's output for those new images
            x, y = join(x, y, *replayed(plan))          # plus plan.n_replay patterns sampled from the memory
            step(x, y)                                  # one SGD step of the trainable part
    end_experience(plan)                # CWR* consolidates; the memory takes its share; the head for inference

:class:`ExperienceLoop` runs that loop; a learner implements ``begin_experience``, ``step``, ``end_experience``
(and ``join`` for its array type). The rules both sides must agree on live here too, so that they can: the replay
mix (:func:`plan_experience`), the named seed offsets of the random generators (:data:`SEED_OFFSETS`), and the
default and valid latent-replay (LR) layers. A benchmark that times one step calls the same methods.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from bnncl.core.errors import ConfigError
from bnncl.core.memory import LatentMemory
from bnncl.core.options import LearnOptions
from bnncl.core.rng import Pcg32

# Every random generator a learner draws from: seed + offset. The simulation and the device use the same ones, so
# that the two draw the same shuffles and the same replayed patterns and differ only by their arithmetic.
SEED_OFFSETS = {
    "shuffle": 0,  # the order of the new patterns, per epoch
    "replay": 7919,  # the replayed patterns of each step and the memory's update
    "quantizer": 104729,  # stochastic rounding of the learning step's quantizers
}

DEVICE_STRATEGIES = ("cwr", "ar1")  # naive and joint are the simulation's bounds, not something a device runs


def generator(seed: int, name: str) -> Pcg32:
    """The generator ``name`` (a key of :data:`SEED_OFFSETS`) of a learner seeded with ``seed``: PCG32 seeded
    ``(seed + offset, offset)`` (:mod:`bnncl.core.rng`, the C learner's generator too)."""
    offset = SEED_OFFSETS[name]
    return Pcg32(seed + offset, offset)


# -- the latent-replay layer ---------------------------------------------------------------------------------------

def backbone_lr_layer(binary_boundary: str | None, stages) -> str:
    """Where a backbone is cut by default (and where ``bnncl export`` records its LR layer): at the binary boundary
    (the stored activation is then ±1), else before the first block of the last stage."""
    if binary_boundary:
        return binary_boundary
    return f"block{sum(s[1] for s in stages[:-1]) + 1}"


def default_lr_layer(strategy: str, backbone_default: str) -> str:
    """CWR* alone trains the head (work A); the other strategies train from the backbone's default LR layer up."""
    return "head" if strategy == "cwr" else backbone_default


def check_lr_layer(lr_layer: str, split_points, where: str = "") -> str:
    """``lr_layer`` if the model can be cut there, else a ConfigError listing the layers it can be cut at."""
    if lr_layer not in split_points:
        raise ConfigError(f"{where}no layer {lr_layer!r} to put the latent-replay layer at "
                          f"(valid: {', '.join(split_points)})")
    return lr_layer


# -- one experience ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExperiencePlan:
    """What :func:`plan_experience` decides before the first step of an experience."""

    patterns: int  # new patterns in the experience
    cur: np.ndarray  # patterns per class, replayed ones included (CWR*'s counts)
    n_replay: int  # replayed patterns per step
    per_step: int  # new patterns per step

    @property
    def steps(self) -> int:
        """Steps per epoch."""
        return math.ceil(self.patterns / self.per_step)

    def minibatches(self, order: np.ndarray):
        """The new patterns of each step of an epoch, in ``order``."""
        for s in range(self.steps):
            yield order[s * self.per_step:(s + 1) * self.per_step]


def plan_experience(labels: np.ndarray, num_classes: int, options: LearnOptions,
                    memory: LatentMemory | None) -> ExperiencePlan:
    """``cur`` and the replay mix (docs/method.md §4). ``fixed``: ``replay_batch`` replayed patterns beside
    ``batch_size`` new ones in every step; ``proportional``: a step of ``batch_size`` patterns in all, replayed ones in
    the memory's share of new + stored patterns (at least one new pattern per step)."""
    n, b = len(labels), options.batch_size
    cur = np.bincount(labels, minlength=num_classes)
    n_replay, per_step = 0, b
    if memory is not None and len(memory):
        m = len(memory)
        cur = cur + memory.class_counts(num_classes)
        if options.replay_mix == "proportional":
            n_replay = min(b - 1, round(b * m / (n + m)))
            per_step = b - n_replay
        else:
            n_replay = options.replay_batch
    return ExperiencePlan(n, cur, n_replay, per_step)


class ExperienceLoop:
    """The template both learners derive from. Subclasses set ``options``, ``memory`` (a LatentMemory or None) and
    the generators ``shuffle_rng`` and ``replay_rng`` (:func:`generator`), and implement the phases below."""

    options: LearnOptions
    memory: LatentMemory | None
    shuffle_rng: Pcg32
    replay_rng: Pcg32

    def begin_experience(self, labels: np.ndarray) -> ExperiencePlan:
        raise NotImplementedError

    def step(self, x, y) -> float | None:
        """One SGD step of the trainable part on the minibatch (new and replayed patterns); the loss where known."""
        raise NotImplementedError

    def end_experience(self, plan: ExperiencePlan, labels: np.ndarray) -> None:
        raise NotImplementedError

    def replayed(self, plan: ExperiencePlan) -> tuple[np.ndarray, np.ndarray] | None:
        """The patterns replayed in the next step (None without replay)."""
        return self.memory.sample(plan.n_replay, self.replay_rng) if plan.n_replay else None

    def join(self, x, y, rx: np.ndarray, ry: np.ndarray):
        """The new patterns and the replayed ones as one minibatch (NumPy here; the simulation's are tensors)."""
        return np.concatenate([x, rx]), np.concatenate([y, ry])

    def run_experience(self, labels: np.ndarray, new_batch, on_step=None) -> tuple[ExperiencePlan, list]:
        """The loop of the module docstring. ``new_batch(idx)``: the trainable part's input for new patterns ``idx``
        (with their labels: ``labels[idx]``). ``on_step(seconds)``: called after every step. Returns the plan and the
        losses."""
        plan = self.begin_experience(labels)
        losses = []
        for _ in range(self.options.epochs):
            order = self.shuffle_rng.permutation(plan.patterns)
            for idx in plan.minibatches(order):
                t0 = time.perf_counter()
                x, y = new_batch(idx), labels[idx]
                replayed = self.replayed(plan)
                if replayed is not None:
                    x, y = self.join(x, y, *replayed)
                losses.append(self.step(x, y))
                if on_step is not None:
                    on_step(time.perf_counter() - t0)
        self.end_experience(plan, labels)
        return plan, losses
