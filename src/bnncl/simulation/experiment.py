"""``bnncl learn``: a scenario, a pretrained (or freshly pretrained) backbone, one or more strategies; results as
JSON, figures and a short markdown report in a run directory.

The configuration is a dict (from CLI flags or a TOML file); every section refuses unknown keys, naming the valid ones:

.. code-block:: toml

    dataset = "fashion-mnist"        # or mnist, cifar10, core50 (then give data = "DIR")
    strategies = ["naive", "cwr", "ar1", "joint"]
    checkpoint = "runs/base/model.pt"  # optional; without it, the backbone is pretrained on experience 0
    out = "runs/learn"

    [stream]                           # type: nc | ni | nic | core50; the rest are that factory's options
    type = "nc"
    n_experiences = 5

    [pretrain]                         # used when no checkpoint is given
    epochs = 6
    binary_boundary = "block5"

    [learn]                            # LearnOptions
    epochs = 4
    replay_size = 1500
    replay_storage = "bits"
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from bnncl.core.atomic import atomic_write_text
from bnncl.core.errors import ConfigError
from bnncl.core.options import STRATEGIES, LearnOptions, renamed_keys
from bnncl.core.typecheck import check_arguments, check_value
from bnncl.data import DATASETS, LabelledArrays, load_dataset, scenarios

STREAM_TYPES = ("nc", "ni", "nic", "core50")
TOP_TYPES = {"dataset": "str", "data": "str", "dataset_options": "dict", "strategies": "str | list[str]",
             "checkpoint": "str", "out": "str", "seed": "int", "stream": "dict", "pretrain": "dict", "learn": "dict"}
# holdout: pretrain on this stratified fraction of the training instances, and build the stream from the rest
# (a disjoint instance split); without it, pretraining uses experience 0 of the stream (the reference code's choice).
PRETRAIN_TYPES = {"epochs": "int", "batch_size": "int", "lr": "float", "augment": "bool", "binary_boundary": "str",
                  "preset": "str", "holdout": "float"}
TOP_KEYS, PRETRAIN_KEYS = tuple(TOP_TYPES), tuple(PRETRAIN_TYPES)  # the keys each section takes


def _check_keys(d: dict, valid, where: str) -> None:
    bad = sorted(set(d) - set(valid))
    if bad:
        raise ConfigError(f"{where}: unknown key {', '.join(bad)} (valid: {', '.join(valid)})")


def load_config(path) -> dict:
    """A TOML config file, its values type-checked (errors name the file)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a TOML config is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if isinstance(cfg.get("learn"), dict):
        try:
            cfg["learn"] = renamed_keys(cfg["learn"])
        except ConfigError as e:
            raise ConfigError(f"{path}: [learn] {e}") from None
    check_config(cfg, f"{path}: ")
    return cfg


def check_config(cfg: dict, where: str = "", default_stream: str | None = None) -> None:
    """What a config can be refused for on its own: unknown keys, values of the wrong type, unknown or no strategies,
    an unknown scenario or keys it does not take (``where``: the file, for the message; ``default_stream``: the
    scenario type to check the [stream] keys against when the config names none; None: not checked, as a --stream
    flag may still choose it)."""
    _check_keys(cfg, TOP_KEYS, f"{where}config")
    check_types(cfg, where)
    strategies = cfg.get("strategies", ["ar1"])
    if strategies == []:
        raise ConfigError(f"{where}strategies is empty: give at least one of {', '.join(STRATEGIES)}")
    for s in [strategies] if isinstance(strategies, str) else strategies:
        if s not in STRATEGIES:
            raise ConfigError(f"{where}unknown strategy {s!r} (valid: {', '.join(STRATEGIES)})")
    stream = cfg.get("stream") or {}
    kind = stream.get("type", default_stream)
    if kind is not None:
        if kind not in STREAM_TYPES:
            raise ConfigError(f"{where}unknown scenario {kind!r} (valid: {', '.join(STREAM_TYPES)})")
        factory = scenarios.core50 if kind == "core50" else scenarios.SCENARIO_FACTORIES[kind]
        _check_keys(stream, ["type"] + scenarios.scenario_options(factory), f"{where}[stream] of type {kind}")
    _check_keys(cfg.get("pretrain") or {}, PRETRAIN_KEYS, f"{where}[pretrain]")
    _check_keys(cfg.get("learn") or {}, [f.name for f in dataclasses.fields(LearnOptions) if f.name != "strategy"],
                f"{where}[learn]")


def check_types(cfg: dict, where: str = "") -> None:
    """The type of every known key's value (unknown keys are :func:`validate`'s to refuse)."""
    for key, value in cfg.items():
        if key in TOP_TYPES:
            check_value(where, key, value, TOP_TYPES[key])
    stream = cfg.get("stream") or {}
    kind = stream.get("type", "nc")
    check_value(f"{where}[stream] ", "type", kind, "str")
    if kind in STREAM_TYPES:
        factory = scenarios.core50 if kind == "core50" else scenarios.SCENARIO_FACTORIES[kind]
        check_arguments(factory, {k: v for k, v in stream.items() if k != "type"}, f"{where}[stream] ")
    for key, value in (cfg.get("pretrain") or {}).items():
        if key in PRETRAIN_TYPES:
            check_value(f"{where}[pretrain] ", key, value, PRETRAIN_TYPES[key])
    learn_types = {f.name: f.type for f in dataclasses.fields(LearnOptions)}
    for key, value in (cfg.get("learn") or {}).items():
        if key in learn_types:
            check_value(f"{where}[learn] ", key, value, learn_types[key])


def validate(cfg: dict) -> dict:
    """Fill defaults and check every key and value before anything runs."""
    check_config(cfg, default_stream="nc")
    cfg = {"dataset": "fashion-mnist", "strategies": ["ar1"], "out": "runs/learn", "seed": 0, "dataset_options": {},
           **cfg}
    cfg["stream"] = dict(cfg.get("stream") or {"type": "nc"})
    cfg["pretrain"] = dict(cfg.get("pretrain") or {})
    cfg["learn"] = dict(cfg.get("learn") or {})
    if cfg["dataset"] not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg['dataset']!r} (valid: {', '.join(DATASETS)})")
    if isinstance(cfg["strategies"], str):
        cfg["strategies"] = [cfg["strategies"]]
    if cfg["stream"].get("type") == "core50" and cfg["dataset"] != "core50":
        raise ConfigError("the core50 scenario needs dataset = \"core50\"")
    for s in cfg["strategies"]:
        learn_options(cfg, s)  # value checks now, not mid-run
    return cfg


def learn_options(cfg: dict, strategy: str) -> LearnOptions:
    """The ``[learn]`` section for one strategy; the top-level seed unless ``[learn]`` sets its own."""
    return LearnOptions(**{"seed": cfg["seed"], **cfg["learn"], "strategy": strategy})


def build_stream(cfg: dict) -> tuple[scenarios.Stream, LabelledArrays | None]:
    """The stream, and the held-out pretraining set when ``[pretrain] holdout`` is given."""
    opts = {k: v for k, v in cfg["stream"].items() if k != "type"}
    kind = cfg["stream"].get("type", "nc")
    if kind == "core50":
        if not cfg.get("data"):
            raise ConfigError("core50: give the directory that holds its files (--data DIR)")
        if cfg["pretrain"].get("holdout"):
            raise ConfigError("[pretrain] holdout does not apply to core50: its scenarios fix every batch")
        return scenarios.core50(cfg["data"], **opts), None
    opts.setdefault("seed", cfg["seed"])
    train = load_dataset(cfg["dataset"], cfg.get("data"), "train", **cfg["dataset_options"])
    test = load_dataset(cfg["dataset"], cfg.get("data"), "test", **cfg["dataset_options"])
    held = None
    if cfg["pretrain"].get("holdout"):
        held, train = train.split_fraction(cfg["pretrain"]["holdout"], seed=cfg["seed"])
    return scenarios.make_stream(kind, train, test, **opts), held


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
    from bnncl.core.plots import accuracy_curves, accuracy_matrix
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
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    accuracy_curves(runs, out / "accuracy.png", title=stream.describe().split(":")[0])
    for r in runs:
        if len(r["accuracy"]) > 1:
            accuracy_matrix(r, out / f"matrix_{r['strategy']}.png")
    atomic_write_text(out / "report.md", report_markdown([result]))
    return result


def _pp(v) -> str:
    return "–" if v is None else f"{v * 100:.1f} pp"


def _kib(n) -> str:
    return "–" if n is None else f"{n / 1024:,.1f} KiB"


def table_rows(result: dict) -> list[dict]:
    rows = []
    for r in result["runs"]:
        b = r["bytes"]
        rows.append({"stream": r["stream"]["name"], "strategy": r.get("label") or r["strategy"],
                     "lr_layer": r["options"]["lr_layer"], "final": r["final_accuracy"],
                     "forgetting": r["forgetting"] if len(r["accuracy"]) > 1 else None,
                     "bwt": r["backward_transfer"] if len(r["accuracy"]) > 1 else None,
                     "replay": b.get("replay_memory"),
                     "storage": r["options"]["replay_storage"] if "replay_memory" in b else "",
                     "patterns": r["options"]["replay_size"] if "replay_memory" in b else None,
                     "trainable": b["trainable_parameters_fp32"], "cwr": b.get("consolidated_rows"),
                     "seconds": r.get("seconds")})
    return rows


def report_markdown(results: list[dict]) -> str:
    lines = ["| stream | strategy | LR layer | final accuracy | forgetting | BWT | replay memory | "
             "trainable params (fp32) | CWR* rows | time |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for r in table_rows(res):
            replay = f"{_kib(r['replay'])} ({r['patterns']} x {r['storage']})" if r["replay"] else "–"
            seconds = "–" if r["seconds"] is None else f"{r['seconds']:.0f} s"
            lines.append(f"| {r['stream']} | {r['strategy']} | {r['lr_layer']} | {r['final'] * 100:.2f} % | "
                         f"{_pp(r['forgetting'])} | {_pp(r['bwt'])} | {replay} | {_kib(r['trainable'])} | "
                         f"{_kib(r['cwr'])} | {seconds} |")
    return "\n".join(lines) + "\n"
