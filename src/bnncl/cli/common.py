"""What several commands share: the data, stream and strategy options, the config a learn command builds from its
flags, and the checks of a JSON destination. NumPy only, torch never imported here."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

from bnncl.core.errors import ConfigError
from bnncl.core.options import LearnOptions

DEFAULT_CHECKPOINT = "runs/pretrain/model.pt"  # PretrainOptions.out (bnncl.training, torch: not imported here)
LEARN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LearnOptions)}  # the [learn] defaults, for --help
SPLITS = ("train", "test")
# Two constants of the device runtime, repeated: bnncl.device.ops.BACKENDS and Model.predict's batch size live beside
# the device kernels (the C library's, and numba's for work B's learner), which neither `bnncl --help` nor the torch
# commands should import to build their parsers (tests/cli/test_device.py holds these equal to the library's).
DEVICE_BACKENDS = ("packed", "float")
DEVICE_PREDICT_BATCH = 256
FORCE_HELP = "replace an existing output file of another kind (an input is never replaced)"


def add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help=FORCE_HELP)


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def default_of(function, name: str):
    """The default of a library function's parameter, for a flag's default or its --help."""
    return inspect.signature(function).parameters[name].default


def add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "fashion-mnist") -> None:
    from bnncl.data import DATASETS, DEFAULT_ROOTS, SCENARIOS, load_core50

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, choices=DATASETS,
                   help="dataset format and name (default: %(default)s)" if default_dataset
                        else "dataset (default: the checkpoint's)")
    g.add_argument("--data", metavar="DIR", help="directory holding the dataset files (default for fashion-mnist: "
                                                 f"{DEFAULT_ROOTS['fashion-mnist']})")
    g.add_argument("--scenario", help=f"CORe50 scenario in LUP.pkl: {', '.join(SCENARIOS)} "
                                      f"(default {default_of(load_core50, 'scenario')})")
    g.add_argument("--run", type=int, help=f"CORe50 run, 0-9 (default {default_of(load_core50, 'run')})")
    g.add_argument("--labels", choices=("object", "category"), help="CORe50 labels: 50 objects or 10 categories "
                                                                    f"(default {default_of(load_core50, 'labels')})")
    g.add_argument("--batch", type=int, help="CORe50: use only this training batch of the scenario (e.g. 0, the first "
                                             "batch a vendor ships)")
    g.add_argument("--classes", type=int_list, metavar="I,J,..", help="use only these classes (e.g. the base classes)")


def dataset_options(args) -> dict:
    opts = {k: getattr(args, k) for k in ("scenario", "run", "labels", "batch") if getattr(args, k) is not None}
    if opts and args.dataset != "core50":
        raise ConfigError(f"--{next(iter(opts))} applies to the core50 dataset only, not {args.dataset}")
    return opts


def write_json(path: str, obj) -> None:
    from bnncl.core.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def data_files(args) -> list:
    """The files of the dataset directory a command reads (``--data``, or the dataset's default one): inputs, which
    no output may replace."""
    from pathlib import Path

    from bnncl.data.config import DEFAULT_DATASET
    from bnncl.data.datasets import DEFAULT_ROOTS

    root = getattr(args, "data", None) or DEFAULT_ROOTS.get(getattr(args, "dataset", None) or DEFAULT_DATASET)
    if root is None or not Path(root).is_dir():
        return []
    return [f for f in Path(root).iterdir() if f.is_file()]


def check_json_output(path: str | None, inputs=(), force: bool = False) -> None:
    """Before the work: a JSON destination that can be written, is none of the inputs, and is JSON if it exists."""
    if path:
        from bnncl.core.atomic import check_output, is_json_file

        check_output(path, inputs, "JSON file", is_json_file, force)


def add_stream_args(p: argparse.ArgumentParser) -> None:
    from bnncl.data.config import DEFAULT_STREAM, STREAM_TYPES
    from bnncl.data.scenarios import SHIFTS, nc, nic

    g = p.add_argument_group("stream")
    g.add_argument("--stream", choices=STREAM_TYPES, help=f"scenario type (default: {DEFAULT_STREAM})")
    g.add_argument("--experiences", type=int,
                   help=f"nc/ni: number of experiences (default {default_of(nc, 'n_experiences')})")
    g.add_argument("--first", type=int, help="nc/nic: classes in the first experience")
    g.add_argument("--order", type=int_list, metavar="I,J,..", help="nc: class order (default: drawn from the seed), "
                                                                    "e.g. the base classes of a checkpoint first")
    g.add_argument("--shift", choices=SHIFTS, help="ni: domain shift along the stream")
    g.add_argument("--batches", type=int,
                   help="nic: number of small batches after the first experience "
                        f"(default {default_of(nic, 'n_batches')})")


def add_strategy_args(p: argparse.ArgumentParser, device: bool = False) -> None:
    """The [learn] options as flags, their defaults and choices LearnOptions'; ``device``: only those the device
    learner runs."""
    from bnncl.core.affine import FLOAT_BITS, GRIDS, ROUNDINGS
    from bnncl.core.memory import STORAGES, UPDATE_RULES
    from bnncl.core.options import MIXES, Q_BIN_UPDATES, RANGES, STRATEGIES
    from bnncl.core.protocol import DEVICE_STRATEGIES

    d = LEARN_DEFAULTS
    g = p.add_argument_group("strategy")
    if device:
        g.add_argument("--strategy", choices=DEVICE_STRATEGIES,
                       help=f"ar1: CWR* + 1-bit latent replay; cwr: CWR* alone (default {d['strategy']})")
        g.add_argument("--lr-layer", help="latent-replay layer: head (work A), or a block of the model file's "
                                          "trainable part (work B: that block and those above it train) (default: "
                                          "head for cwr, the model file's LR layer for ar1)")
    else:
        g.add_argument("--strategy", nargs="+", metavar="S",
                       help=f"one or more of {', '.join(STRATEGIES)} (default: {d['strategy']})")
        g.add_argument("--lr-layer", help="latent-replay layer: train above it (default: head for cwr; else the binary "
                                          "boundary or the last stage's first block)")
    g.add_argument("--epochs", type=int, help=f"epochs per experience (default {d['epochs']})")
    g.add_argument("--lr", type=float, help=f"SGD learning rate, reset each experience (default {d['lr']})")
    g.add_argument("--batch-size", type=int, help=f"new patterns per step (default {d['batch_size']})")
    g.add_argument("--replay-size", type=int, help=f"replay memory slots (default {d['replay_size']})")
    g.add_argument("--replay-storage", choices=STORAGES,
                   help=f"1-bit packed signs or float32 (default {d['replay_storage']})")
    g.add_argument("--replay-update", choices=UPDATE_RULES, help=f"memory update rule (default {d['replay_update']})")
    g.add_argument("--replay-mix", choices=MIXES,
                   help="minibatch mix: fixed (--batch-size new + --replay-batch replayed) or proportional "
                        f"(default {d['replay_mix']})")
    g.add_argument("--replay-batch", type=int,
                   help=f"replayed patterns per step with --replay-mix fixed (default {d['replay_batch']})")
    g = p.add_argument_group(f"hybrid quantization of the learning step (docs/method.md §5; {FLOAT_BITS} = float32)")
    # the old spellings (--qf, --qb, --qbin, --qbin-update) stay accepted, as bnncl.core.options.OLD_SPELLINGS
    g.add_argument("--q-f", "--qf", type=int, metavar="BITS",
                   help=f"forward bits: head input, weights, softmax, logit gradient (default {d['q_f']})")
    g.add_argument("--q-b", "--qb", type=int, metavar="BITS",
                   help="backward bits: gradients and stored trainable parameters, at least --q-f "
                        f"(default {d['q_b']})")
    g.add_argument("--q-rounding", choices=ROUNDINGS, help=f"default {d['q_rounding']}")
    g.add_argument("--q-bin", "--qbin", type=int, metavar="BITS",
                   help=f"gradients and latent weights of trainable binary convs (default {d['q_bin']})")
    g.add_argument("--q-bin-update", "--qbin-update", choices=Q_BIN_UPDATES,
                   help="update of trainable binary convs' latent weights: work B's W <- clip(Q(sign(W) - lr g)) or "
                        f"the plain W <- clip(Q(W - lr g)) (default {d['q_bin_update']})")
    if device:
        return
    g.add_argument("--q-ranges", choices=RANGES, help="quantizer ranges: min/max per call, or calibrated "
                                                      f"on experience 0 (work A) (default {d['q_ranges']})")
    g.add_argument("--q-grid", choices=GRIDS,
                   help="quantizer levels: docs/method.md's float form m + k(M-m)/(2^b-1), or the integer form's "
                        f"(q-Z)S that the device learner computes with (default {d['q_grid']})")


# the [learn] keys a flag of a learn command may set (--strategy and --seed go to the top level of the config; the
# commands have flags for some of these only: device learn has no --q-ranges or --q-grid, neither has --handwritten)
LEARN_FLAGS = tuple(name for name in LEARN_DEFAULTS if name not in ("strategy", "seed"))


def learn_config(args) -> dict:
    """The config file (if any) with the flags given on the command line laid over it."""
    from bnncl.data.config import load_config

    cfg = load_config(args.config) if args.config else {}
    for key in ("dataset", "data", "checkpoint", "out", "seed"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    if args.strategy:
        cfg["strategies"] = [args.strategy] if isinstance(args.strategy, str) else args.strategy
    stream = dict(cfg.get("stream") or {})
    if args.stream:
        stream["type"] = args.stream
    for flag, key in (("experiences", "n_experiences"), ("first", "first"), ("shift", "shift"),
                      ("batches", "n_batches"), ("order", "order")):
        if getattr(args, flag) is not None:
            stream[key] = getattr(args, flag)
    core50 = {k: getattr(args, k) for k in ("scenario", "run", "labels") if getattr(args, k) is not None}
    if core50:
        if stream.get("type") != "core50":
            raise ConfigError(f"--{next(iter(core50))} applies to --stream core50 only")
        stream.update(core50)
    if stream:
        cfg["stream"] = stream
    if args.classes is not None or args.batch is not None:
        raise ConfigError("--classes and --batch do not apply to learn: the scenario decides "
                          "what each experience holds")
    pre = dict(cfg.get("pretrain") or {})
    for flag, key in (("pretrain_epochs", "epochs"), ("binary_boundary", "binary_boundary"),
                      ("pretrain_holdout", "holdout")):
        if getattr(args, flag, None) is not None:
            pre[key] = getattr(args, flag)
    if pre:
        cfg["pretrain"] = pre
    learn = dict(cfg.get("learn") or {})
    for key in LEARN_FLAGS:
        if getattr(args, key, None) is not None:
            learn[key] = getattr(args, key)
    if learn:
        cfg["learn"] = learn
    return cfg
