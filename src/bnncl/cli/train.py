"""``bnncl pretrain`` and ``bnncl evaluate``: a backbone trained on a dataset (torch), and its accuracy."""

from __future__ import annotations

import argparse
import json

from bnncl.cli.common import (
    DEFAULT_CHECKPOINT,
    SPLITS,
    add_data_args,
    add_force,
    check_json_output,
    data_files,
    dataset_options,
    write_json,
)


def add_parsers(sub) -> None:
    from bnncl.presets import PRESETS

    p = sub.add_parser("pretrain", help="train a backbone (float latent weights, STE) on a dataset or a subset of it",
                       description="Train a backbone on a dataset, or on some of its classes (--classes) or instances "
                                   "(--fraction). Writes a checkpoint atomically after every epoch; --resume continues "
                                   "from it. Runs unchanged under torchrun --nproc_per_node N (DDP with gloo).")
    add_data_args(p)
    p.add_argument("--preset", choices=PRESETS, help="backbone preset (default: the one matching the image shape)")
    p.add_argument("--binary-boundary", metavar="BLOCK",
                   help="binarize the whole input of this block (e.g. block5), shortcut included, so that a "
                        "latent-replay layer there stores exactly 1 bit per activation (default: none)")
    # the defaults of PretrainOptions (bnncl.training.pretrain imports torch, which --help does not need)
    p.add_argument("--epochs", type=int, default=8, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=128, help="per process (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3,
                   help="Adam learning rate, cosine-decayed to 0 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--fraction", type=float, help="train on this stratified fraction of the instances, 0 < F <= 1")
    p.add_argument("--no-augment", action="store_true", help="no random crop/flip")
    p.add_argument("--out", default=DEFAULT_CHECKPOINT, metavar="PATH", help="checkpoint path (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="FILE", help="write the result (history, test accuracy) as JSON")
    p.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)  # smoke tests only
    add_force(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="accuracy (overall and per class) of a checkpoint, as JSON",
                       description="Accuracy, per-class accuracy and confusion matrix of a checkpoint on a dataset "
                                   "split, printed as JSON.")
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, help="default: %(default)s")
    add_data_args(p, default_dataset=None)
    p.add_argument("--split", choices=SPLITS, default="test", help="default: %(default)s")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    add_force(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_pretrain(args) -> int:
    from bnncl.checkpoint import is_checkpoint_file
    from bnncl.core.atomic import check_output
    from bnncl.training.pretrain import PretrainOptions, pretrain

    # before the first epoch: the checkpoint and the JSON can be written where they are asked for
    data = data_files(args)
    check_output(args.out, [args.json, *data], "bnncl checkpoint", is_checkpoint_file, args.force)
    check_json_output(args.json, [args.out, *data], args.force)

    opts = PretrainOptions(
        dataset=args.dataset, data=args.data, dataset_options=dataset_options(args), preset=args.preset,
        binary_boundary=args.binary_boundary,
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
            write_json(args.json, result)
    return 0


def cmd_evaluate(args) -> int:
    from bnncl.checkpoint import load_model
    from bnncl.core.errors import CheckpointError
    from bnncl.data import load_dataset
    from bnncl.data.config import DEFAULT_DATASET
    from bnncl.training.evaluate import evaluate

    check_json_output(args.out, [args.checkpoint, *data_files(args)], args.force)
    model, payload = load_model(args.checkpoint)
    saved = payload.get("meta", {}).get("options", {})
    dataset = args.dataset or saved.get("dataset", DEFAULT_DATASET)
    if args.dataset is None:
        args.dataset = dataset
    options = dataset_options(args) or (saved.get("dataset_options", {}) if dataset == saved.get("dataset") else {})
    data = load_dataset(dataset, args.data, args.split, **options)
    if args.classes is not None:
        data = data.select(classes=args.classes)
    cfg = model.config
    if data.input_shape != cfg.input_shape or data.num_classes != cfg.num_classes:
        shape = "x".join(map(str, cfg.input_shape))
        raise CheckpointError(f"{args.checkpoint}: checkpoint takes {shape} images and {cfg.num_classes} classes, "
                              f"but {data.name} has {'x'.join(map(str, data.input_shape))} images and "
                              f"{data.num_classes} classes")
    report = {"checkpoint": args.checkpoint, "split": args.split, **evaluate(model, data)}
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)
    return 0
