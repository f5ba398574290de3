"""Run one strategy over one stream and measure it: accuracy after every experience, the accuracy matrix
(experience x class), forgetting, backward transfer, time per experience and per step, bytes of every buffer."""

from __future__ import annotations

import copy
import time

import numpy as np
from tqdm import tqdm

from ..data.arrays import LabelledArrays
from ..data.scenarios import Experience, Stream
from ..errors import ConfigError
from ..metrics import backward_transfer, first_seen, forgetting, per_class_accuracy
from ..models import BinaryResNet
from .strategy import LearnOptions, build_learner, resolve_lr_layer


def joint_experience(stream: Stream) -> Experience:
    """Every experience of the stream as one (the joint-training upper bound)."""
    xs = [e.data.x for e in stream.experiences]
    ys = [e.data.y for e in stream.experiences]
    return Experience(0, LabelledArrays(np.concatenate(xs), np.concatenate(ys), stream.class_names, f"{stream.name} joint"))


def check_run(model: BinaryResNet, stream: Stream, options: LearnOptions) -> None:
    """Everything that can make ``run_stream`` fail on its input, checked without training anything."""
    if model.config.num_classes != stream.num_classes:
        raise ConfigError(f"the model's head has {model.config.num_classes} classes, the stream {stream.num_classes}")
    if model.config.input_shape != stream.input_shape:
        raise ConfigError(f"the model takes {model.config.input_shape} images, the stream has {stream.input_shape}")
    resolve_lr_layer(model, options)
    total = sum(len(e) for e in stream.experiences)
    if options.strategy == "ar1" and options.replay_size > total:
        raise ConfigError(f"replay size {options.replay_size} is larger than the {total} training patterns of {stream.name}")


def run_stream(model: BinaryResNet, stream: Stream, options: LearnOptions, progress: bool = True) -> dict:
    """Train a copy of ``model`` on ``stream`` with ``options``; returns a JSON-able result."""
    check_run(model, stream, options)
    model = copy.deepcopy(model)
    learner = build_learner(model, options)
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
    matrix = np.vstack(rows)
    seen = first_seen([e.classes for e in experiences], stream.num_classes)
    return {
        "strategy": options.strategy,
        "options": {**options.to_dict(), "lr_layer": learner.lr_layer},
        "stream": {"name": stream.name, "experiences": len(stream), "sizes": [len(e) for e in stream.experiences],
                   "test": len(stream.test), **{k: v for k, v in stream.info.items() if k != "strengths"}},
        "class_names": list(stream.class_names),
        "accuracy": accs,
        "final_accuracy": accs[-1],
        "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in r] for r in matrix],
        "first_seen": seen.tolist(),
        "forgetting": forgetting(matrix, seen),
        "backward_transfer": backward_transfer(matrix, seen),
        "seconds_per_experience": seconds,
        "seconds_per_step_median": float(np.median(learner.step_seconds)) if learner.step_seconds else None,
        "latent_shape": list(learner.latent_shape),
        "bytes": learner.nbytes(),
        "gradient_relative_error": learner.hybrid.gradient_errors() if learner.hybrid is not None else None,
    }
