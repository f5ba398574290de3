"""Run one strategy over one stream and measure it: accuracy after every experience, the accuracy matrix
(experience x class), forgetting, backward transfer, time per experience and per step, bytes of every buffer."""

from __future__ import annotations

import copy
import time

import numpy as np
from tqdm import tqdm

from bnncl.core.errors import ConfigError
from bnncl.core.metrics import per_class_accuracy
from bnncl.core.results import stream_result
from bnncl.data.arrays import LabelledArrays
from bnncl.data.scenarios import Experience, Stream
from bnncl.models import BinaryResNet
from bnncl.simulation.strategy import LearnOptions, build_strategy, resolve_lr_layer


def joint_experience(stream: Stream) -> Experience:
    """Every experience of the stream as one (the joint-training upper bound)."""
    xs = [e.data.x for e in stream.experiences]
    ys = [e.data.y for e in stream.experiences]
    return Experience(0, LabelledArrays(np.concatenate(xs), np.concatenate(ys), stream.class_names,
                                        f"{stream.name} joint"))


def check_run(model: BinaryResNet, stream: Stream, options: LearnOptions) -> None:
    """Everything that can make ``run_stream`` fail on its input, checked without training anything."""
    if model.config.num_classes != stream.num_classes:
        raise ConfigError(f"the model's head has {model.config.num_classes} classes, the stream {stream.num_classes}")
    if model.config.input_shape != stream.input_shape:
        raise ConfigError(f"the model takes {model.config.input_shape} images, the stream has {stream.input_shape}")
    resolve_lr_layer(model, options)
    total = sum(len(e) for e in stream.experiences)
    if options.strategy == "ar1" and options.replay_size > total:
        raise ConfigError(f"replay size {options.replay_size} is larger than the {total} training patterns of "
                          f"{stream.name}")


def run_stream(model: BinaryResNet, stream: Stream, options: LearnOptions, progress: bool = True) -> dict:
    """Train a copy of ``model`` on ``stream`` with ``options``; returns a JSON-able result."""
    check_run(model, stream, options)
    model = copy.deepcopy(model)
    learner = build_strategy(model, options)
    experiences = [joint_experience(stream)] if options.strategy == "joint" else list(stream.experiences)
    rows, accs, seconds = [], [], []
    bar = tqdm(experiences, desc=f"{options.strategy} on {stream.name}", unit="exp", disable=not progress, leave=False)
    for exp in bar:
        t0 = time.perf_counter()
        learner.train_experience(exp)
        seconds.append(time.perf_counter() - t0)
        pred = learner.predict(stream.test.x)
        rows.append(per_class_accuracy(stream.test.y, pred, stream.num_classes))
        accs.append(float((pred == stream.test.y).mean()))
        bar.set_postfix(acc=f"{accs[-1]:.3f}")
    return stream_result({**options.to_dict(), "lr_layer": learner.lr_layer}, stream, experiences, rows, accs, seconds,
                         learner.step_seconds, learner.latent_shape, learner.nbytes(),
                         learner.hybrid.gradient_errors() if learner.hybrid is not None else None)
