"""The ``bnncl`` command line. Each sub-command imports torch only when it needs it."""

from __future__ import annotations

import argparse
import json
import sys

from bnncl.core.errors import BnnclError, ConfigError

DEFAULT_CHECKPOINT = "runs/pretrain/model.pt"


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "fashion-mnist") -> None:
    from bnncl.data import DATASETS

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, choices=DATASETS,
                   help="dataset format and name (default: %(default)s)" if default_dataset
                        else "dataset (default: the checkpoint's)")
    g.add_argument("--data", metavar="DIR", help="directory holding the dataset files (default for fashion-mnist: "
                                                 "/usr/share/datasets/fashion-mnist)")
    g.add_argument("--scenario", help="CORe50 scenario in LUP.pkl: ni, nc, nic, nicv2_79, nicv2_196, nicv2_391 "
                                      "(default ni)")
    g.add_argument("--run", type=int, help="CORe50 run, 0-9 (default 0)")
    g.add_argument("--labels", choices=("object", "category"), help="CORe50 labels: 50 objects or 10 categories "
                                                                    "(default category)")
    g.add_argument("--batch", type=int, help="CORe50: use only this training batch of the scenario (e.g. 0, the first "
                                             "batch a vendor ships)")
    g.add_argument("--classes", type=_int_list, metavar="I,J,..", help="use only these classes (e.g. the base classes)")


def _dataset_options(args) -> dict:
    opts = {k: getattr(args, k) for k in ("scenario", "run", "labels", "batch") if getattr(args, k) is not None}
    if opts and args.dataset != "core50":
        raise ConfigError(f"--{next(iter(opts))} applies to the core50 dataset only, not {args.dataset}")
    return opts


def _write_json(path: str, obj) -> None:
    from bnncl.core.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _data_files(args) -> list:
    """The files of the dataset directory a command reads (``--data``, or the dataset's default one): inputs, which
    no output may replace."""
    from pathlib import Path

    from bnncl.data.datasets import DEFAULT_ROOTS

    root = getattr(args, "data", None) or DEFAULT_ROOTS.get(getattr(args, "dataset", None) or "fashion-mnist")
    if root is None or not Path(root).is_dir():
        return []
    return [f for f in Path(root).iterdir() if f.is_file()]


def _check_json_output(path: str | None, inputs=(), force: bool = False) -> None:
    """Before the work: a JSON destination that can be written, is none of the inputs, and is JSON if it exists."""
    if path:
        from bnncl.core.atomic import check_output, is_json_file

        check_output(path, inputs, "JSON file", is_json_file, force)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other error (and the same exit status)."""

    def error(self, message):
        command = self.prog.removeprefix("bnncl").strip()
        self.exit(2, f"bnncl: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def cmd_summary(args) -> int:
    from bnncl.models import build_model, preset_config
    from bnncl.models.summary import format_summary, summarize

    _check_json_output(args.json, [args.checkpoint], args.force)
    if args.checkpoint:
        from bnncl.checkpoint import load_model

        model, _ = load_model(args.checkpoint)
    else:
        model = build_model(preset_config(args.preset, args.num_classes))
    s = summarize(model)
    print(format_summary(s))
    if args.json:
        _write_json(args.json, s)
    return 0


def cmd_pretrain(args) -> int:
    from bnncl.checkpoint import is_checkpoint_file
    from bnncl.core.atomic import check_output
    from bnncl.training.pretrain import PretrainOptions, pretrain

    # before the first epoch: the checkpoint and the JSON can be written where they are asked for
    data = _data_files(args)
    check_output(args.out, [args.json, *data], "bnncl checkpoint", is_checkpoint_file, args.force)
    _check_json_output(args.json, [args.out, *data], args.force)

    opts = PretrainOptions(
        dataset=args.dataset, data=args.data, dataset_options=_dataset_options(args), preset=args.preset,
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
            _write_json(args.json, result)
    return 0


def cmd_evaluate(args) -> int:
    from bnncl.checkpoint import load_model
    from bnncl.core.errors import CheckpointError
    from bnncl.data import load_dataset
    from bnncl.training.evaluate import evaluate

    _check_json_output(args.out, [args.checkpoint, *_data_files(args)], args.force)
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
                              f"but {data.name} has {'x'.join(map(str, data.input_shape))} images and "
                              f"{data.num_classes} classes")
    report = {"checkpoint": args.checkpoint, "split": args.split, **evaluate(model, data)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        _write_json(args.out, report)
    return 0


def _learn_config(args) -> dict:
    """The config file (if any) with the flags given on the command line laid over it."""
    from bnncl.simulation.experiment import load_config

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
    for key in ("lr_layer", "epochs", "lr", "batch_size", "replay_size", "replay_storage", "replay_update",
                "replay_mix", "replay_batch", "q_f", "q_b", "q_bin", "q_ranges", "q_rounding", "q_grid",
                "q_bin_update"):
        if getattr(args, key, None) is not None:
            learn[key] = getattr(args, key)
    if learn:
        cfg["learn"] = learn
    return cfg


def cmd_learn(args) -> int:
    from bnncl.core.atomic import check_writable_dir
    from bnncl.simulation.experiment import report_markdown, run_experiment

    cfg = _learn_config(args)
    check_writable_dir(cfg.get("out") or "runs/learn")
    result = run_experiment(cfg, progress=not args.quiet)
    print(result["backbone"]["architecture"])
    print(result["stream"])
    print(report_markdown([result]), end="")
    print(f"wrote {result['config']['out']}/result.json, report.md, accuracy.png and the accuracy matrices")
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from bnncl.core.atomic import atomic_write_text, check_writable_dir, same_file
    from bnncl.core.errors import DataError, OutputError
    from bnncl.core.plots import accuracy_curves
    from bnncl.core.results import check_result
    from bnncl.simulation.experiment import report_markdown

    if args.out:
        check_writable_dir(args.out)
        for run in args.runs:  # report.md there would replace that run's own report
            run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
            if Path(args.out).is_dir() and same_file(args.out, run_dir):
                raise OutputError(f"{args.out}: is the run directory {run}; writing the report there would replace "
                                  "its own report.md (give another --out)")
    results = []
    for run in args.runs:
        path = Path(run) / "result.json" if Path(run).is_dir() else Path(run)
        if path.is_dir():
            raise DataError(f"{path}: is a directory, not a result file")
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: no such result file (give a run directory of bnncl learn or its "
                            "result.json)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a bnncl learn result ({type(e).__name__}: {e})") from None
        check_result(res, path)
        for r in res["runs"]:
            r["label"] = f"{r['strategy']} ({path.parent.name})" if len(args.runs) > 1 else r["strategy"]
        results.append(res)
    text = report_markdown(results)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "report.md", text)
        by_stream: dict[str, list] = {}
        for res in results:
            for r in res["runs"]:
                by_stream.setdefault(r["stream"]["name"], []).append(r)
        for name, runs in by_stream.items():
            accuracy_curves(runs, out / f"accuracy_{name}.png", title=name)
        print(f"wrote {out}/report.md and {len(by_stream)} figure(s)")
    return 0


def cmd_export(args) -> int:
    import os

    from bnncl.core.atomic import check_output
    from bnncl.device.modelfile import is_model_file
    from bnncl.export import export_checkpoint

    check_output(args.out, [args.checkpoint], "bnncl model file", is_model_file, args.force)
    meta = export_checkpoint(args.checkpoint, args.out, args.lr_layer, args.latent_weights)
    size, source = os.path.getsize(args.out), os.path.getsize(args.checkpoint)
    print(f"{args.out}: {meta['description']}")
    print(f"  frozen part: {', '.join(meta['frozen'])}; latent-replay layer: {meta['lr_layer']}; "
          f"trainable: {', '.join(meta['trainable'])}")
    print(f"  {size / 1024:.1f} KiB, {source / size:.1f}x smaller than the checkpoint ({source / 1024:.1f} KiB)")
    return 0


def _device_images(args):
    """(images, labels or None, name) for ``device predict``: a dataset split, or .npy files. NumPy only."""
    import numpy as np

    if args.image_labels and not args.images:
        raise ConfigError("--image-labels gives the labels of --images: give --images too")
    if args.images:
        from bnncl.data.arrays import load_npy

        images = load_npy(args.images)
        labels = load_npy(args.image_labels) if args.image_labels else None
        return images, labels, args.images
    from bnncl.data import load_dataset

    data = load_dataset(args.dataset, args.data, args.split, **_dataset_options(args))
    if args.classes is not None:
        data = data.select(classes=args.classes)
    return data.x, np.asarray(data.y), data.name


def cmd_device_predict(args) -> int:
    import time

    import numpy as np

    from bnncl.device import Model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    _check_json_output(args.out, [args.model, args.images, args.image_labels,
                                  *([] if args.images else _data_files(args))], args.force)
    model = Model.load(args.model)
    images, labels, name = _device_images(args)
    try:
        images = model.check_images(images)
    except BnnclError as e:
        raise type(e)(f"{name}: {e}") from None
    if labels is not None:
        try:
            labels = model.check_labels(labels, len(images))
        except BnnclError as e:
            raise type(e)(f"{args.image_labels or name}: {e}") from None
    t0 = time.perf_counter()
    pred = model.predict(images, backend=args.backend, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    report = {"model": args.model, "data": name, "backend": args.backend, "images": int(len(images)),
              "seconds": round(seconds, 3), "images_per_second": round(len(images) / max(seconds, 1e-9), 1)}
    if labels is not None:
        report["accuracy"] = float(np.mean(pred == labels)) if len(labels) else None
        trained = (model.meta.get("source") or {}).get("trained_classes")
        if trained and len(trained) < model.num_classes:  # a backbone pretrained on base classes only
            seen = np.isin(labels, trained)
            report["trained_classes"] = trained
            report["accuracy_on_trained_classes"] = float(np.mean(pred[seen] == labels[seen])) if seen.any() else None
    print(json.dumps(report, indent=2))
    if args.out:
        _write_json(args.out, {**report, "class_names": model.class_names, "predictions": pred.tolist()})
    return 0


def cmd_device_learn(args) -> int:
    """A device fed by a stream: the device learner (no torch) over every experience, tested after each."""
    import time
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from bnncl.core.atomic import atomic_write_text
    from bnncl.core.metrics import per_class_accuracy
    from bnncl.core.plots import accuracy_curves, accuracy_matrix
    from bnncl.core.results import stream_result
    from bnncl.device import Learner
    from bnncl.device.learner import STRATEGIES
    from bnncl.simulation.experiment import build_stream, learn_options, report_markdown, validate

    cfg = _learn_config(args)
    cfg.pop("checkpoint", None)  # the model file is the backbone
    if args.out is None:  # beside the simulation's run of the same config, never over it
        cfg["out"] = str(Path(cfg["out"]) / "device") if cfg.get("out") else "runs/device"
    cfg = validate({**cfg, "pretrain": {}})
    strategies = [s for s in cfg["strategies"] if s in STRATEGIES]
    if not strategies:
        raise ConfigError(f"none of the strategies {cfg['strategies']} runs on the device "
                          f"(it runs {', '.join(STRATEGIES)})")
    skipped = [s for s in cfg["strategies"] if s not in STRATEGIES]
    if skipped:
        print(f"not on the device (simulation bounds): {', '.join(skipped)}")
    if args.state and len(strategies) > 1:
        raise ConfigError(f"--state names one learner's state, but {len(strategies)} strategies run "
                          f"({', '.join(strategies)}): give --strategy, or leave --state out "
                          "(OUT/state_<strategy>.bnst)")
    out = Path(cfg["out"])
    from bnncl.core.atomic import check_output, check_writable_dir

    check_writable_dir(out)
    for strategy in strategies:  # the states: writable, and never the model file itself
        check_output(Path(args.state) if args.state else out / f"state_{strategy}.bnst", [args.model])
    stream, _ = build_stream(cfg)
    runs = []
    for strategy in strategies:
        options = learn_options(cfg, strategy)
        state = Path(args.state) if args.state else out / f"state_{strategy}.bnst"
        learner = Learner.open(args.model, state, options, frozen_chunk=args.frozen_chunk)
        if learner.num_classes != stream.num_classes or learner.model.input_shape != stream.input_shape:
            raise ConfigError(f"{args.model}: the model takes {'x'.join(map(str, learner.model.input_shape))} "
                              f"images and {learner.num_classes} classes; the stream {stream.name} has "
                              f"{'x'.join(map(str, stream.input_shape))} images and {stream.num_classes} classes")
        if learner.experiences > len(stream):
            raise ConfigError(f"{state}: the saved learner has consumed {learner.experiences} experiences, the stream "
                              f"has {len(stream)}: give another --state to start afresh")
        if learner.experiences:
            print(f"{strategy}: resuming from {state} after experience {learner.experiences - 1}")

        def evaluate():
            pred = learner.predict(stream.test.x, batch_size=256)
            learner.annotate(accuracy=float(np.mean(pred == stream.test.y)),
                             per_class=per_class_accuracy(stream.test.y, pred, stream.num_classes).tolist())

        if learner.log and "accuracy" not in learner.log[-1]:  # stopped between learning and testing
            evaluate()
        t0 = time.perf_counter()
        bar = tqdm(stream.experiences, desc=f"{strategy} on the device, {stream.name}", unit="exp",
                   initial=learner.experiences, disable=args.quiet, leave=False)
        for exp in stream.experiences[learner.experiences:]:
            learner.learn(exp.data.x, exp.data.y)
            evaluate()
            bar.update()
            bar.set_postfix(acc=f"{learner.log[-1]['accuracy']:.3f}")
        bar.close()
        log = learner.log
        result = stream_result({**options.to_dict(), "lr_layer": learner.model.lr_layer, "backend": learner.backend,
                                "frozen_chunk": learner.frozen_chunk,
                                "state": str(state)}, stream,
                               list(stream.experiences), [np.array(e["per_class"]) for e in log],
                               [e["accuracy"] for e in log], [e["seconds"] for e in log], learner.step_seconds,
                               learner.latent_shape, {**learner.nbytes(), "trainable_parameters_fp32":
                                                      4 * learner.num_classes * learner.features})
        # the time of every experience learned, across the runs that resumed (testing excluded)
        runs.append({**result, "label": f"{strategy} (device)", "seconds": float(sum(e["seconds"] for e in log)),
                     "seconds_this_run": time.perf_counter() - t0})
    res = {"config": cfg, "backbone": {"model_file": args.model, "architecture": learner.model.describe()},
           "stream": stream.describe(), "device": True, "runs": runs}
    atomic_write_text(out / "result.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(out / "report.md", report_markdown([res]))
    try:
        accuracy_curves(runs, out / "accuracy.png", title=f"{stream.describe().split(':')[0]} (device)")
        for r in runs:
            if len(r["accuracy"]) > 1:
                accuracy_matrix(r, out / f"matrix_{r['strategy']}.png")
    except ModuleNotFoundError as e:  # a device without matplotlib: the JSON and the report are the results
        print(f"no figures ({e.name} is not installed)")
    print(report_markdown([res]), end="")
    print(f"wrote {out}/result.json, report.md, accuracy.png and the accuracy matrices; learner state in "
          f"{', '.join(r['options']['state'] for r in runs)}")
    return 0


def cmd_device_info(args) -> int:
    from bnncl.device import Model

    model = Model.load(args.model)
    print(model.describe())
    for layer in model.meta["layers"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in layer.items()))
    print(json.dumps({k: model.meta[k] for k in ("precision", "source", "bnncl_version")}, indent=2))
    return 0


def _add_stream_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stream")
    g.add_argument("--stream", choices=("nc", "ni", "nic", "core50"), help="scenario type (default: nc)")
    g.add_argument("--experiences", type=int, help="nc/ni: number of experiences (default 5)")
    g.add_argument("--first", type=int, help="nc/nic: classes in the first experience")
    g.add_argument("--order", type=_int_list, metavar="I,J,..", help="nc: class order (default: drawn from the seed), "
                                                                     "e.g. the base classes of a checkpoint first")
    g.add_argument("--shift", choices=("none", "rotation", "contrast", "noise"),
                   help="ni: domain shift along the stream")
    g.add_argument("--batches", type=int, help="nic: number of small batches after the first experience (default 40)")


def _add_strategy_args(p: argparse.ArgumentParser, device: bool = False) -> None:
    """The [learn] options as flags; ``device``: only those the device learner runs."""
    g = p.add_argument_group("strategy")
    if device:
        g.add_argument("--strategy", choices=("ar1", "cwr"), help="ar1: CWR* + 1-bit latent replay; cwr: CWR* alone "
                                                                   "(default ar1)")
        g.add_argument("--lr-layer", help="latent-replay layer: head (work A), or a block of the model file's "
                                          "trainable part (work B: that block and those above it train) (default: "
                                          "head for cwr, the model file's LR layer for ar1)")
    else:
        g.add_argument("--strategy", nargs="+", metavar="S",
                       help="one or more of naive, cwr, ar1, joint (default: ar1)")
        g.add_argument("--lr-layer", help="latent-replay layer: train above it (default: head for cwr; else the binary "
                                          "boundary or the last stage's first block)")
    g.add_argument("--epochs", type=int, help="epochs per experience (default 4)")
    g.add_argument("--lr", type=float, help="SGD learning rate, reset each experience (default 0.01)")
    g.add_argument("--batch-size", type=int, help="new patterns per step (default 50)")
    g.add_argument("--replay-size", type=int, help="replay memory slots (default 1500)")
    g.add_argument("--replay-storage", choices=("bits", "float32"), help="1-bit packed signs or float32 (default bits)")
    g.add_argument("--replay-update", choices=("ar1", "balanced"), help="memory update rule (default balanced)")
    g.add_argument("--replay-mix", choices=("proportional", "fixed"),
                   help="minibatch mix: fixed (--batch-size new + --replay-batch replayed) or proportional "
                        "(default fixed)")
    g.add_argument("--replay-batch", type=int, help="replayed patterns per step with --replay-mix fixed (default 128)")
    g = p.add_argument_group("hybrid quantization of the learning step (docs/method.md §5; 32 = float32)")
    g.add_argument("--q-f", "--qf", type=int, metavar="BITS",
                   help="forward bits: head input, weights, softmax, logit gradient (default 32)")
    g.add_argument("--q-b", "--qb", type=int, metavar="BITS",
                   help="backward bits: gradients and stored trainable parameters, at least --q-f (default 32)")
    g.add_argument("--q-rounding", choices=("nearest", "stochastic"), help="default nearest")
    g.add_argument("--q-bin", "--qbin", type=int, metavar="BITS",
                   help="gradients and latent weights of trainable binary convs (default 32)")
    g.add_argument("--q-bin-update", "--qbin-update", choices=("rebinarize", "plain"),
                   help="update of trainable binary convs' latent weights: work B's W <- clip(Q(sign(W) - lr g)) or "
                        "the plain W <- clip(Q(W - lr g)) (default rebinarize)")
    if device:
        return
    g.add_argument("--q-ranges", choices=("dynamic", "fixed"), help="quantizer ranges: min/max per call, or calibrated "
                                                                   "on experience 0 (work A) (default dynamic)")
    g.add_argument("--q-grid", choices=("affine", "integer"),
                   help="quantizer levels: docs/method.md's float form m + k(M-m)/(2^b-1), or the integer form's "
                        "(q-Z)S that the device learner computes with (default affine)")


def build_parser() -> argparse.ArgumentParser:
    from bnncl.presets import PRESETS

    parser = _Parser(prog="bnncl", description="On-device continual learning with binary neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="per-layer parameters, memory at deployed precision and MACs of a backbone",
                       description="Print a per-layer table: parameters by bit width, bytes at deployed precision "
                                   "(1-bit weights counted as bits) and as an fp32 copy, binary and float MACs per "
                                   "image.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=PRESETS, default="fmnist", help="backbone preset (default: %(default)s)")
    src.add_argument("--checkpoint", metavar="PATH", help="summarize the architecture stored in a checkpoint")
    p.add_argument("--num-classes", type=int, default=10, help="head size for --preset (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file of another kind (an input is never replaced)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("pretrain", help="train a backbone (float latent weights, STE) on a dataset or a subset of it",
                       description="Train a backbone on a dataset, or on some of its classes (--classes) or instances "
                                   "(--fraction). Writes a checkpoint atomically after every epoch; --resume continues "
                                   "from it. Runs unchanged under torchrun --nproc_per_node N (DDP with gloo).")
    _add_data_args(p)
    p.add_argument("--preset", choices=PRESETS, help="backbone preset (default: the one matching the image shape)")
    p.add_argument("--binary-boundary", metavar="BLOCK",
                   help="binarize the whole input of this block (e.g. block5), shortcut included, so that a "
                        "latent-replay layer there stores exactly 1 bit per activation (default: none)")
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
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file of another kind (an input is never replaced)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="accuracy (overall and per class) of a checkpoint, as JSON",
                       description="Accuracy, per-class accuracy and confusion matrix of a checkpoint on a dataset "
                                   "split, printed as JSON.")
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, help="default: %(default)s")
    _add_data_args(p, default_dataset=None)
    p.add_argument("--split", choices=("train", "test"), default="test", help="default: %(default)s")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file of another kind (an input is never replaced)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("learn",
                       help="continual learning over a scenario with one or more strategies (torch simulation)",
                       description="Run strategies over a continual-learning stream and write result.json, report.md, "
                                   "accuracy.png and one accuracy matrix per strategy to --out. Without --checkpoint "
                                   "the backbone is first pretrained on experience 0 (kept in OUT/pretrain and "
                                   "reused). Flags override the --config TOML file.")
    p.add_argument("--config", metavar="FILE.toml", help="a TOML config (see the README); flags override it")
    _add_data_args(p, default_dataset=None)
    _add_stream_args(p)
    g = p.add_argument_group("backbone")
    g.add_argument("--checkpoint", metavar="PATH", help="pretrained backbone (default: pretrain on experience 0)")
    g.add_argument("--pretrain-epochs", type=int, help="epochs of that pretraining (default 8)")
    g.add_argument("--pretrain-holdout", type=float, metavar="F",
                   help="pretrain on a stratified fraction F of the training instances instead, and build the stream "
                        "from the rest (a disjoint instance split)")
    g.add_argument("--binary-boundary", metavar="BLOCK",
                   help="pretrain with the input of BLOCK binarized in full (1-bit replay there is exact)")
    _add_strategy_args(p)
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/learn)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("export", help="turn a checkpoint into the device's model file (packed bits, folded BN)",
                       description="Write one versioned, checksummed model file for the device runtime: binary conv "
                                   "weights packed to bits, BN and scales folded into per-channel multipliers, biases "
                                   "and thresholds, the float stem and head, and the latent-replay split. Reading it "
                                   "needs NumPy and numba only.")
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, help="default: %(default)s")
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write (e.g. model.bnn)")
    p.add_argument("--lr-layer", help="latent-replay layer: the frozen part ends before it (default: the binary "
                                      "boundary, else the last stage's first block)")
    p.add_argument("--latent-weights", action="store_true",
                   help="also keep the float32 latent weights of the trainable blocks' binary convs, which on-device "
                        "learning with --q-bin-update plain continues from (the default re-binarized update needs only "
                        "their signs and scale)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file of another kind (an input is never replaced)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("device", help="the device runtime (no torch): predict with, or inspect, an exported model",
                       description="Commands that use the device runtime only (NumPy + numba, bit-packed kernels).")
    dsub = p.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    d = dsub.add_parser("predict", help="predict a dataset split or a .npy of uint8 images with a model file",
                        description="Run an exported model on a dataset split (default: the Fashion-MNIST test set) "
                                    "or on a .npy file of uint8 images (N, H, W[, C]); print accuracy (when labels are "
                                    "known) and throughput as JSON.")
    d.add_argument("model", help="model file written by bnncl export")
    _add_data_args(d)
    d.add_argument("--split", choices=("train", "test"), default="test", help="default: %(default)s")
    d.add_argument("--images", metavar="FILE.npy", help="predict these images instead of a dataset")
    d.add_argument("--image-labels", metavar="FILE.npy", help="labels of --images (int, N), to report accuracy")
    d.add_argument("--backend", choices=("packed", "float"), default="packed",
                   help="packed: bit-packed XNOR-popcount kernels (the device); float: the same model as float32 "
                        "NumPy (a baseline) (default: %(default)s)")
    d.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    d.add_argument("--out", metavar="FILE", help="also write the report and every prediction as JSON")
    d.add_argument("--force", action="store_true",
                   help="replace an existing output file of another kind (an input is never replaced)")
    d.set_defaults(func=cmd_device_predict)
    d = dsub.add_parser("learn", help="keep learning on the device: a stream fed to the device learner (no torch)",
                        description="Simulate a device fed by a continual-learning stream, with the device runtime "
                                    "only: the frozen part on bit-packed kernels; the head (work A) or the blocks "
                                    "above the LR layer and the head (work B) trained in integer arithmetic at "
                                    "--q-f/--q-b/--q-bin bits (float32 when all are 32); CWR*; latent replay stored at "
                                    "1 bit. The learner's state is written atomically after every experience (--state) "
                                    "and a second run resumes from it. Writes result.json, report.md and the figures "
                                    "of bnncl learn to --out. Flags override the --config TOML file (its [learn] "
                                    "section).")
    d.add_argument("model", help="model file written by bnncl export")
    d.add_argument("--config", metavar="FILE.toml", help="a TOML config (as for bnncl learn); flags override it")
    _add_data_args(d, default_dataset=None)
    _add_stream_args(d)
    _add_strategy_args(d, device=True)
    d.add_argument("--seed", type=int, help="default 0")
    d.add_argument("--state", metavar="FILE", help="learner state file (default: OUT/state_<strategy>.bnst); resumed "
                                                   "from when it exists")
    d.add_argument("--frozen-chunk", type=int, metavar="N",
                   help="run the frozen part on N images at a time (default: the whole minibatch): the same latents, "
                        "a smaller peak of activation memory, a little slower")
    d.add_argument("--out", metavar="DIR", help="run directory (default: the config's out + /device, else runs/device)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_device_learn)
    d = dsub.add_parser("info", help="layers, precision and source of a model file")
    d.add_argument("model", help="model file written by bnncl export")
    d.set_defaults(func=cmd_device_info)

    p = sub.add_parser("report", help="put several learn runs side by side: a table and a figure per stream",
                       description="Read the result.json of each run and print one markdown table; with --out, also "
                                   "write report.md and one accuracy figure per stream.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories of bnncl learn (or their result.json)")
    p.add_argument("--out", metavar="DIR", help="write report.md and accuracy_<stream>.png here")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BnnclError as e:
        print(f"bnncl: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        print(f"bnncl: error: 'bnncl {args.command}' needs torch, which is not installed here (the device runtime "
              "does not); install the training side with: pip install 'bnncl[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bnncl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
