"""A stream fed to a device: :func:`run_device_experiment` learns the stream a config names with the device learner
only (NumPy + numba, no torch): the counterpart of :func:`bnncl.simulation.experiment.run_experiment` on the device
runtime, writing the same run directory (:func:`bnncl.core.runs.write_run`). The config is
:mod:`bnncl.data.config`'s, the same for both. Importing this module does not import numba (the learner is imported
when a run starts).
"""


from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from bnncl.core.atomic import check_output, check_writable_dir
from bnncl.core.errors import ConfigError
from bnncl.core.metrics import per_class_accuracy
from bnncl.core.options import LearnOptions
from bnncl.core.protocol import DEVICE_STRATEGIES
from bnncl.core.results import stream_result
from bnncl.core.runs import write_run
from bnncl.data.config import build_stream, learn_options, validate

if TYPE_CHECKING:
    from bnncl.device.learner import Learner

# -- the device learner over a stream -------------------------------------------------------------------------------

DEVICE_OUT = "runs/device"
PREDICT_BATCH = 256  # test images per call when the learner is tested after each experience


def device_out(cfg: dict, out=None) -> str:
    """The run directory: ``out``, else the config's ``out`` + ``/device`` (beside the simulation's run of the same
    config, never over it), else ``runs/device``."""
    if out is not None:
        return str(out)
    return str(Path(cfg["out"]) / "device") if cfg.get("out") else DEVICE_OUT


def run_device_experiment(model_file, cfg: dict, *, out=None, state=None, frozen_chunk: int | None = None,
                          progress: bool = True, log: Callable[[str], None] = print, runtime: str = "python") -> dict:
    """Every device strategy of ``cfg`` over its stream, on the device learner opened from ``model_file``; the result,
    also written to the run directory.

    ``cfg`` is a config as :func:`bnncl.simulation.experiment.run_experiment` takes (unvalidated); its ``checkpoint``
    and ``[pretrain]`` are ignored (the model file is the backbone), its strategies the device does not run (the
    simulation's bounds, naive and joint) are skipped with a line to ``log``; none left is a ConfigError. ``out``: the
    run directory (:func:`device_out`). ``state``: the learner's state file (default ``OUT/state_<strategy>.bnst``,
    the C learner's ``OUT/state_<strategy>_c.bnls``; one strategy only): a learner resumes from it when it exists
    and it is written atomically after every experience, so an interrupted run continues where it stopped and a
    finished one learns nothing more. ``frozen_chunk``: images
    at a time through the frozen part (:meth:`bnncl.device.Learner.open`). ``runtime``: ``python`` (the Python device
    learner) or ``c`` (the C learner: the head at q_f/q_b <= 16; the same results bit for bit).

    Checked before anything is learned: the config and its options, the strategies, the run directory and the state
    files (writable, never the model file); per strategy, before its first experience: that the model fits the stream
    and that the state has not consumed more experiences than the stream has. After each experience the learner is
    tested on the whole test set (accuracy and per-class accuracy, recorded in its log).

    The result is the simulation's: ``{"config", "backbone": {"model_file", "architecture"}, "stream", "device": True,
    "runs"}``, one :func:`bnncl.core.results.stream_result` per strategy with ``label`` "<strategy> (device)",
    ``seconds`` (every experience learned, across the runs that resumed, testing excluded) and ``seconds_this_run``;
    its options add ``lr_layer``, ``backend``, ``frozen_chunk`` and ``state``. Written by
    :func:`bnncl.core.runs.write_run` (figures skipped without matplotlib)."""
    cfg = {k: v for k, v in cfg.items() if k != "checkpoint"}
    cfg = validate({**cfg, "out": device_out(cfg, out), "pretrain": {}})
    out = Path(cfg["out"])
    strategies = [s for s in cfg["strategies"] if s in DEVICE_STRATEGIES]
    if not strategies:
        raise ConfigError(f"none of the strategies {cfg['strategies']} runs on the device "
                          f"(it runs {', '.join(DEVICE_STRATEGIES)})")
    skipped = [s for s in cfg["strategies"] if s not in DEVICE_STRATEGIES]
    if skipped:
        log(f"not on the device (simulation bounds): {', '.join(skipped)}")
    if state and len(strategies) > 1:
        raise ConfigError(f"--state names one learner's state, but {len(strategies)} strategies run "
                          f"({', '.join(strategies)}): give --strategy, or leave --state out "
                          "(OUT/state_<strategy>.bnst)")
    suffix = "_c.bnls" if runtime == "c" else ".bnst"  # the C learner's two-slot file is a format of its own
    states = {s: Path(state) if state else out / f"state_{s}{suffix}" for s in strategies}
    check_writable_dir(out)
    for path in states.values():  # the states: writable, and never the model file itself
        check_output(path, [model_file])
    stream, _ = build_stream(cfg)
    runs = []
    for strategy in strategies:
        options = learn_options(cfg, strategy)
        learner = _open(model_file, states[strategy], options, frozen_chunk, stream, log, runtime)
        seconds_this_run = _learn_stream(learner, stream, f"{strategy} on the device, {stream.name}", progress)
        entries = learner.log
        result = stream_result({**options.to_dict(), "lr_layer": learner.model.lr_layer, "backend": learner.backend,
                                "frozen_chunk": learner.frozen_chunk, "state": str(states[strategy]),
                                "runtime": runtime}, stream,
                               list(stream.experiences), [np.array(e["per_class"]) for e in entries],
                               [e["accuracy"] for e in entries], [e["seconds"] for e in entries], learner.step_seconds,
                               learner.latent_shape, {**learner.nbytes(), "trainable_parameters_fp32":
                                                      4 * learner.num_classes * learner.features})
        # the time of every experience learned, across the runs that resumed (testing excluded)
        runs.append({**result, "label": f"{strategy} (device)", "seconds": float(sum(e["seconds"] for e in entries)),
                     "seconds_this_run": seconds_this_run})
    res = {"config": cfg, "backbone": {"model_file": str(model_file), "architecture": learner.model.describe()},
           "stream": stream.describe(), "device": True, "runs": runs}
    write_run(out, res, log)
    return res


def _open(model_file, state: Path, options: LearnOptions, frozen_chunk, stream, log, runtime) -> Learner:
    """The learner of one strategy, resumed from ``state`` when it exists, checked against the stream."""
    from bnncl.device.learner import Learner

    learner = Learner.open(model_file, state, options, frozen_chunk=frozen_chunk, runtime=runtime)
    if learner.num_classes != stream.num_classes or learner.model.input_shape != stream.input_shape:
        raise ConfigError(f"{model_file}: the model takes {'x'.join(map(str, learner.model.input_shape))} "
                          f"images and {learner.num_classes} classes; the stream {stream.name} has "
                          f"{'x'.join(map(str, stream.input_shape))} images and {stream.num_classes} classes")
    if learner.experiences > len(stream):
        raise ConfigError(f"{state}: the saved learner has consumed {learner.experiences} experiences, the stream "
                          f"has {len(stream)}: give another --state to start afresh")
    if learner.experiences:
        log(f"{options.strategy}: resuming from {state} after experience {learner.experiences - 1}")
    return learner


def _learn_stream(learner: Learner, stream, desc: str, progress: bool) -> float:
    """The experiences the learner has not consumed yet, each learned then tested (its log annotated); the seconds
    that took."""
    from tqdm import tqdm

    def evaluate():
        pred = learner.predict(stream.test.x, batch_size=PREDICT_BATCH)
        learner.annotate(accuracy=float(np.mean(pred == stream.test.y)),
                         per_class=per_class_accuracy(stream.test.y, pred, stream.num_classes).tolist())

    if learner.log and "accuracy" not in learner.log[-1]:  # stopped between learning and testing
        evaluate()
    t0 = time.perf_counter()
    bar = tqdm(stream.experiences, desc=desc, unit="exp", initial=learner.experiences, disable=not progress,
               leave=False)
    for exp in stream.experiences[learner.experiences:]:
        learner.learn(exp.data.x, exp.data.y)
        evaluate()
        bar.update()
        bar.set_postfix(acc=f"{learner.log[-1]['accuracy']:.3f}")
    bar.close()
    return time.perf_counter() - t0
