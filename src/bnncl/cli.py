"""The ``bnncl`` command line. Each sub-command imports torch only when it needs it."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import BnnclError, ConfigError

DEFAULT_CHECKPOINT = "runs/pretrain/model.pt"


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "fashion-mnist") -> None:
    from .data import DATASETS

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, choices=DATASETS,
                   help="dataset format and name (default: %(default)s)" if default_dataset else "dataset (default: the checkpoint's)")
    g.add_argument("--data", metavar="DIR", help="directory holding the dataset files (default for fashion-mnist: /usr/share/datasets/fashion-mnist)")
    g.add_argument("--scenario", help="CORe50 scenario in LUP.pkl: ni, nc, nic, nicv2_79, nicv2_196, nicv2_391 (default ni)")
    g.add_argument("--run", type=int, help="CORe50 run, 0-9 (default 0)")
    g.add_argument("--labels", choices=("object", "category"), help="CORe50 labels: 50 objects or 10 categories (default category)")
    g.add_argument("--batch", type=int, help="CORe50: use only this training batch of the scenario (e.g. 0, the first batch a vendor ships)")
    g.add_argument("--classes", type=_int_list, metavar="I,J,..", help="use only these classes (e.g. the base classes)")


def _dataset_options(args) -> dict:
    opts = {k: getattr(args, k) for k in ("scenario", "run", "labels", "batch") if getattr(args, k) is not None}
    if opts and args.dataset != "core50":
        raise ConfigError(f"--{next(iter(opts))} applies to the core50 dataset only, not {args.dataset}")
    return opts


def _write_json(path: str, obj) -> None:
    from .atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def cmd_summary(args) -> int:
    from .models import build_model, preset_config
    from .models.summary import format_summary, summarize

    if args.checkpoint:
        from .checkpoint import load_model

        model, _ = load_model(args.checkpoint)
    else:
        model = build_model(preset_config(args.preset, args.num_classes))
    s = summarize(model)
    print(format_summary(s))
    if args.json:
        _write_json(args.json, s)
    return 0


def cmd_pretrain(args) -> int:
    from .learning.pretrain import PretrainOptions, pretrain

    opts = PretrainOptions(
        dataset=args.dataset, data=args.data, dataset_options=_dataset_options(args), preset=args.preset,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, classes=args.classes,
        fraction=args.fraction, augment=not args.no_augment, out=args.out, resume=args.resume,
        progress=not args.quiet, max_steps_per_epoch=args.max_steps,
    )
    _, result = pretrain(opts)
    if "test" in result:  # rank 0
        t = result["test"]
        last = result["history"][-1] if result["history"] else {}
        print(f"{result['architecture']}\ncheckpoint {result['checkpoint']} after {result['epochs']} epochs; "
              f"test accuracy {t['accuracy']:.4f} on {t['n']} images ({t['dataset']})"
              + (f"; last epoch {last['seconds']:.0f} s, {last['images_per_second']:.0f} images/s" if last else ""))
        if args.json:
            _write_json(args.json, result)
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import load_model
    from .data import load_dataset
    from .errors import CheckpointError
    from .learning.evaluate import evaluate

    model, payload = load_model(args.checkpoint)
    saved = payload.get("meta", {}).get("options", {})
    dataset = args.dataset or saved.get("dataset", "fashion-mnist")
    if args.dataset is None:
        args.dataset = dataset
    options = _dataset_options(args) or (saved.get("dataset_options", {}) if dataset == saved.get("dataset") else {})
    data = load_dataset(dataset, args.data, args.split, **options)
    if args.classes is not None:
        data = data.select(classes=args.classes)
    cfg = model.config
    if data.input_shape != cfg.input_shape or data.num_classes != cfg.num_classes:
        shape = "x".join(map(str, cfg.input_shape))
        raise CheckpointError(f"{args.checkpoint}: checkpoint takes {shape} images and {cfg.num_classes} classes, "
                              f"but {data.name} has {'x'.join(map(str, data.input_shape))} images and {data.num_classes} classes")
    report = {"checkpoint": args.checkpoint, "split": args.split, **evaluate(model, data)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        _write_json(args.out, report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .models import PRESETS

    parser = argparse.ArgumentParser(prog="bnncl", description="On-device continual learning with binary neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="per-layer parameters, memory at deployed precision and MACs of a backbone",
                       description="Print a per-layer table: parameters by bit width, bytes at deployed precision "
                                   "(1-bit weights counted as bits) and as an fp32 copy, binary and float MACs per image.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=PRESETS, default="fmnist", help="backbone preset (default: %(default)s)")
    src.add_argument("--checkpoint", metavar="PATH", help="summarize the architecture stored in a checkpoint")
    p.add_argument("--num-classes", type=int, default=10, help="head size for --preset (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("pretrain", help="train a backbone (float latent weights, STE) on a dataset or a subset of it",
                       description="Train a backbone on a dataset, or on some of its classes (--classes) or instances "
                                   "(--fraction). Writes a checkpoint atomically after every epoch; --resume continues "
                                   "from it. Runs unchanged under torchrun --nproc_per_node N (DDP with gloo).")
    _add_data_args(p)
    p.add_argument("--preset", choices=PRESETS, help="backbone preset (default: the one matching the image shape)")
    p.add_argument("--epochs", type=int, default=8, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=128, help="per process (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-decayed to 0 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--fraction", type=float, help="train on this stratified fraction of the instances, 0 < F <= 1")
    p.add_argument("--no-augment", action="store_true", help="no random crop/flip")
    p.add_argument("--out", default=DEFAULT_CHECKPOINT, metavar="PATH", help="checkpoint path (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="FILE", help="write the result (history, test accuracy) as JSON")
    p.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)  # smoke tests only
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="accuracy (overall and per class) of a checkpoint, as JSON",
                       description="Accuracy, per-class accuracy and confusion matrix of a checkpoint on a dataset split, printed as JSON.")
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, help="default: %(default)s")
    _add_data_args(p, default_dataset=None)
    p.add_argument("--split", choices=("train", "test"), default="test", help="default: %(default)s")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BnnclError as e:
        print(f"bnncl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bnncl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
