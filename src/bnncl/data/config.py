"""An experiment's config (``bnncl learn``'s and ``bnncl device learn``'s alike), its checks, and the stream it names.

It sits with the dataset formats: it names datasets and scenarios, and both the simulation and the device read it.
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

from bnncl.core.errors import ConfigError
from bnncl.core.options import STRATEGIES, LearnOptions, renamed_keys
from bnncl.core.typecheck import check_arguments, check_value
from bnncl.data import DATASETS, LabelledArrays, load_dataset, scenarios

STREAM_TYPES = ("nc", "ni", "nic", "core50")
DEFAULT_DATASET, DEFAULT_STREAM, DEFAULT_OUT, DEFAULT_SEED = "fashion-mnist", "nc", "runs/learn", 0
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
    strategies = cfg.get("strategies", [LearnOptions.strategy])
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
    kind = stream.get("type", DEFAULT_STREAM)
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
    check_config(cfg, default_stream=DEFAULT_STREAM)
    cfg = {"dataset": DEFAULT_DATASET, "strategies": [LearnOptions.strategy], "out": DEFAULT_OUT,
           "seed": DEFAULT_SEED, "dataset_options": {}, **cfg}
    cfg["stream"] = dict(cfg.get("stream") or {"type": DEFAULT_STREAM})
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
    kind = cfg["stream"].get("type", DEFAULT_STREAM)
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


