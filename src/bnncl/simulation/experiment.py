"""``bnncl learn``: a scenario, a pretrained (or freshly pretrained) backbone, one or more strategies; results as
JSON, figures and a short markdown report in a run directory.

The config (its keys: :mod:`bnncl.data.config`), its validation and the stream are shared with the device
learner's runs and live there, below both sides; they are importable from here as before. The run directory is
written by :func:`bnncl.core.runs.write_run`, for both.
"""

from __future__ import annotations

import time
from pathlib import Path

from bnncl.core.errors import ConfigError
from bnncl.core.results import report_markdown, table_rows
from bnncl.core.runs import write_run
from bnncl.data import scenarios
from bnncl.data.config import (
    PRETRAIN_KEYS,
    PRETRAIN_TYPES,
    STREAM_TYPES,
    TOP_KEYS,
    TOP_TYPES,
    build_stream,
    check_config,
    check_types,
    learn_options,
    load_config,
    validate,
)

__all__ = ["STREAM_TYPES", "TOP_TYPES", "PRETRAIN_TYPES", "TOP_KEYS", "PRETRAIN_KEYS", "load_config", "check_config",
           "check_types", "validate", "learn_options", "build_stream", "backbone_for", "run_experiment", "table_rows",
           "report_markdown"]


def backbone_for(cfg: dict, stream: scenarios.Stream, progress: bool, held=None):
    """The checkpoint's model, or one pretrained on experience 0 of the stream or on the held-out instances
    (kept in the run directory and reused)."""
    from bnncl.checkpoint import load_model
    from bnncl.models import build_model
    from bnncl.training.pretrain import PretrainOptions, model_config, pretrain

    if cfg.get("checkpoint"):
        model, _ = load_model(cfg["checkpoint"])
        if model.config.input_shape != stream.input_shape or model.config.num_classes != stream.num_classes:
            raise ConfigError(f"{cfg['checkpoint']}: checkpoint takes {model.config.describe()}, but the stream has "
                              f"{'x'.join(map(str, stream.input_shape))} images and {stream.num_classes} classes")
        _preflight(cfg, stream, model)
        return model, {"checkpoint": cfg["checkpoint"]}
    pre = {k: v for k, v in cfg["pretrain"].items() if k != "holdout"}
    if held is not None:
        base, subset = held, f"{held.name} (seed {cfg['seed']})"
    else:
        base, subset = stream.experiences[0].data, f"{stream.name} experience 0 (seed {cfg['seed']})"
    _preflight(cfg, stream, build_model(model_config(PretrainOptions(**pre), base)))  # before minutes of pretraining
    test = stream.test.select(classes=sorted(set(base.y.tolist())))
    opts = PretrainOptions(dataset=cfg["dataset"], data=cfg.get("data"), dataset_options=cfg["dataset_options"],
                           seed=cfg["seed"], subset=subset, out=str(Path(cfg["out"]) / "pretrain" / "model.pt"),
                           resume=True, progress=progress, **pre)
    model, result = pretrain(opts, data=(base, test))
    return model, {"pretrained_on": opts.subset, "checkpoint": opts.out,
                   "pretrain_test_accuracy": result["test"]["accuracy"], "pretrain_test_set": test.name}


def _preflight(cfg: dict, stream: scenarios.Stream, model) -> None:
    """Check what depends on the model (LR layer, replay size) for every strategy, before anything trains."""
    from bnncl.simulation.run import check_run

    for s in cfg["strategies"]:
        check_run(model, stream, learn_options(cfg, s))


def run_experiment(cfg: dict, progress: bool = True) -> dict:
    """Every strategy of ``cfg`` over its stream on the torch simulation; the result, also written to ``cfg["out"]``
    (:func:`bnncl.core.runs.write_run`)."""
    from bnncl.simulation.run import run_stream

    cfg = validate(cfg)
    out = Path(cfg["out"])
    stream, held = build_stream(cfg)
    model, origin = backbone_for(cfg, stream, progress, held)  # checks every strategy's options against the model
    runs = []
    for s in cfg["strategies"]:
        t0 = time.perf_counter()
        runs.append({**run_stream(model, stream, learn_options(cfg, s), progress), "seconds": time.perf_counter() - t0})
    result = {"config": cfg, "backbone": {**origin, "architecture": model.config.describe()},
              "stream": stream.describe(), "runs": runs}
    write_run(out, result)
    return result
