"""``bnncl export`` (a checkpoint to the device's model file, torch) and ``bnncl device predict / learn / info`` (the
device runtime only: NumPy and the C runtime's library, numba for work B's learning; never torch)."""

from __future__ import annotations

import json

from bnncl.cli.common import (
    DEFAULT_CHECKPOINT,
    DEVICE_BACKENDS,
    DEVICE_PREDICT_BATCH,
    LEARN_DEFAULTS,
    SPLITS,
    add_data_args,
    add_force,
    add_strategy_args,
    add_stream_args,
    check_json_output,
    data_files,
    dataset_options,
    learn_config,
    write_json,
)
from bnncl.core.errors import BnnclError, ConfigError


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="turn a checkpoint into the device's model file (packed bits, folded BN)",
                       description="Write one versioned, checksummed model file for the device runtime: binary conv "
                                   "weights packed to bits, BN and scales folded into per-channel multipliers, biases "
                                   "and thresholds, the float stem and head, and the latent-replay split. Reading it "
                                   "needs NumPy alone; the C runtime reads it in place.")
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, help="default: %(default)s")
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write (e.g. model.bnn)")
    p.add_argument("--lr-layer", help="latent-replay layer: the frozen part ends before it (default: the binary "
                                      "boundary, else the last stage's first block)")
    p.add_argument("--latent-weights", action="store_true",
                   help="also keep the float32 latent weights of the trainable blocks' binary convs, which on-device "
                        "learning with --q-bin-update plain continues from (the default re-binarized update needs only "
                        "their signs and scale)")
    p.add_argument("--c-source", metavar="FILE.c",
                   help="also write the model file's bytes as a C11 source for a firmware: a const, 8-byte aligned "
                        "array (in flash on a microcontroller) and its size, to give bnn_init or bnn_learner_init")
    p.add_argument("--c-name", default="bnncl_model", metavar="NAME",
                   help="--c-source's names: NAME[] and NAME_size (default: %(default)s)")
    add_force(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("device", help="the device runtime (no torch): predict with, learn on, or inspect, an exported "
                                      "model",
                       description="Commands that use the device runtime only (NumPy and the C runtime's library; "
                                   "numba only for learning through blocks, work B).")
    dsub = p.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    d = dsub.add_parser("predict", help="predict a dataset split or a .npy of uint8 images with a model file",
                        description="Run an exported model on a dataset split (default: the Fashion-MNIST test set) "
                                    "or on a .npy file of uint8 images (N, H, W[, C]); print accuracy (when labels are "
                                    "known) and throughput as JSON.")
    d.add_argument("model", help="model file written by bnncl export")
    add_data_args(d)
    d.add_argument("--split", choices=SPLITS, default="test", help="default: %(default)s")
    d.add_argument("--images", metavar="FILE.npy", help="predict these images instead of a dataset")
    d.add_argument("--image-labels", metavar="FILE.npy", help="labels of --images (int, N), to report accuracy")
    d.add_argument("--backend", choices=DEVICE_BACKENDS, default=DEVICE_BACKENDS[0],
                   help="packed: bit-packed XNOR-popcount kernels (the device); float: the same model as float32 "
                        "NumPy (a baseline) (default: %(default)s)")
    d.add_argument("--runtime", choices=("python", "c"), default="python",
                   help="python: the layers in Python, on --backend (packed: on the C library's kernels); c: the C "
                        "runtime (runtime/, built with the package) end to end, the same results (default: "
                        "%(default)s)")
    d.add_argument("--batch-size", type=int, default=DEVICE_PREDICT_BATCH, help="default: %(default)s")
    d.add_argument("--out", metavar="FILE", help="also write the report and every prediction as JSON")
    add_force(d)
    d.set_defaults(func=cmd_device_predict)

    d = dsub.add_parser("learn", help="keep learning on the device: a stream fed to the device learner (no torch)",
                        description="Simulate a device fed by a continual-learning stream, with the device runtime "
                                    "only: the frozen part on bit-packed kernels; the head (work A) or the blocks "
                                    "above the LR layer and the head (work B) trained in integer arithmetic at "
                                    "--q-f/--q-b/--q-bin bits (float32 when all are 32); CWR*; latent replay stored at "
                                    "1 bit. --runtime c: the C library's learner (the head; the same results bit for "
                                    "bit). The learner's state is written atomically after every experience (--state) "
                                    "and a second run resumes from it. Writes result.json, report.md and the figures "
                                    "of bnncl learn to --out. Flags override the --config TOML file (its [learn] "
                                    "section).")
    d.add_argument("model", help="model file written by bnncl export")
    d.add_argument("--config", metavar="FILE.toml", help="a TOML config (as for bnncl learn); flags override it")
    add_data_args(d, default_dataset=None)
    add_stream_args(d)
    add_strategy_args(d, device=True)
    d.add_argument("--seed", type=int, help=f"default {LEARN_DEFAULTS['seed']}")
    d.add_argument("--state", metavar="FILE", help="learner state file (default: OUT/state_<strategy>.bnst; with "
                                                   "--runtime c OUT/state_<strategy>_c.bnls); resumed from when it "
                                                   "exists")
    d.add_argument("--frozen-chunk", type=int, metavar="N",
                   help="run the frozen part on N images at a time (default: the whole minibatch): the same latents, "
                        "a smaller peak of activation memory, a little slower")
    d.add_argument("--runtime", choices=("python", "c"), default="python",
                   help="python: the Python device learner (every setting); c: the C library's learner (runtime/, "
                        "built with the package): the head (--lr-layer head) at --q-f/--q-b up to 16 bits, the same "
                        "results bit for bit, its state a two-slot file of its own (default: %(default)s)")
    d.add_argument("--out", metavar="DIR", help="run directory (default: the config's out + /device, else runs/device)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_device_learn)

    d = dsub.add_parser("compare", help="a Python and a C learner's states, bit for bit",
                        description="Compare the state of the Python device learner (a .bnst file) and of the C "
                                    "learner (a two-slot file: bnncl device learn --runtime c, or a device's own "
                                    "learner through bnn_learner.h) of the same model: every consolidated row, count, "
                                    "replay slot and label, the replay scale's sums and the random generators, bit "
                                    "for bit. Exit status 0 when they are equal, 1 when not (the fields that differ "
                                    "are printed).")
    d.add_argument("model", help="the model file both learned on")
    d.add_argument("python_state", help="the Python device learner's state file (.bnst)")
    d.add_argument("c_state", help="the C learner's state file")
    d.set_defaults(func=cmd_device_compare)

    d = dsub.add_parser("info", help="layers, precision and source of a model file")
    d.add_argument("model", help="model file written by bnncl export")
    d.set_defaults(func=cmd_device_info)


def cmd_export(args) -> int:
    import os

    from bnncl.core.atomic import check_output
    from bnncl.device.modelfile import is_model_file
    from bnncl.export import C_SOURCE_MARK, check_c_name, export_checkpoint, write_c_source

    check_output(args.out, [args.checkpoint], "bnncl model file", is_model_file, args.force)
    if args.c_source:
        check_c_name(args.c_name)
        check_output(args.c_source, [args.checkpoint, args.out], "C source written by bnncl export",
                     lambda p: p.read_bytes().startswith(C_SOURCE_MARK.encode()), args.force)
    meta = export_checkpoint(args.checkpoint, args.out, args.lr_layer, args.latent_weights)
    size, source = os.path.getsize(args.out), os.path.getsize(args.checkpoint)
    print(f"{args.out}: {meta['description']}")
    print(f"  frozen part: {', '.join(meta['frozen'])}; latent-replay layer: {meta['lr_layer']}; "
          f"trainable: {', '.join(meta['trainable'])}")
    print(f"  {size / 1024:.1f} KiB, {source / size:.1f}x smaller than the checkpoint ({source / 1024:.1f} KiB)")
    if args.c_source:
        write_c_source(args.out, args.c_source, args.c_name)
        print(f"{args.c_source}: its {size:,} bytes as const unsigned char {args.c_name}[] (8-byte aligned) and "
              f"size_t {args.c_name}_size")
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

    data = load_dataset(args.dataset, args.data, args.split, **dataset_options(args))
    if args.classes is not None:
        data = data.select(classes=args.classes)
    return data.x, np.asarray(data.y), data.name


def cmd_device_predict(args) -> int:
    import time

    import numpy as np

    from bnncl.device import Model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_json_output(args.out, [args.model, args.images, args.image_labels,
                                 *([] if args.images else data_files(args))], args.force)
    backend = "c" if args.runtime == "c" else args.backend
    model = Model.load(args.model, backend)
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
    pred = model.predict(images, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    report = {"model": args.model, "data": name, "runtime": args.runtime, "backend": backend,
              "images": int(len(images)),
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
        write_json(args.out, {**report, "class_names": model.class_names, "predictions": pred.tolist()})
    return 0


def cmd_device_learn(args) -> int:
    """A device fed by a stream: :func:`bnncl.device.experiment.run_device_experiment`."""
    from pathlib import Path

    from bnncl.core.results import report_markdown
    from bnncl.device.experiment import run_device_experiment

    res = run_device_experiment(args.model, learn_config(args), out=args.out, state=args.state,
                                frozen_chunk=args.frozen_chunk, progress=not args.quiet, runtime=args.runtime)
    print(report_markdown([res]), end="")
    print(f"wrote {Path(res['config']['out'])}/result.json, report.md, accuracy.png and the accuracy matrices; learner "
          f"state in {', '.join(r['options']['state'] for r in res['runs'])}")
    return 0


def cmd_device_compare(args) -> int:
    from bnncl.device import Learner
    from bnncl.device.clearner import CLearner, python_learner_state, state_differences

    py = Learner.open(args.model, args.python_state)
    if not py.options.lr_layer == "head":
        raise ConfigError(f"{args.python_state}: a learner of {py.options.lr_layer}; the C learner trains the head")
    c = CLearner.open(args.model, args.c_state)
    diff = state_differences(c.state_arrays(), python_learner_state(py))
    if diff:
        print(f"differ: {', '.join(diff)}")
        return 1
    print(f"equal bit for bit after {py.experiences} experiences: {py.num_classes} consolidated rows of "
          f"{py.features}, {0 if py.memory is None else py.memory.size} replay slots, the generators")
    return 0


def cmd_device_info(args) -> int:
    from bnncl.device import Model
    from bnncl.device.ops import GlobalPool, Head

    model = Model.load(args.model)
    print(model.describe())
    for layer in model.meta["layers"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in layer.items()))
    print(json.dumps({k: model.meta[k] for k in ("precision", "source", "bnncl_version")}, indent=2))
    if isinstance(model.ops[-1], Head) and isinstance(model.ops[-2], GlobalPool):
        from bnncl.core.options import LearnOptions
        from bnncl.device.clearner import arena_by_buffer

        print("the C learner's arena (bnn_learner_arena_size; q_f 8, q_b 16, 50 new + 128 replayed per step, "
              "experiences of up to 12,000 images), bytes:")
        for strategy, what in (("ar1", "ar1, 1,500 1-bit replay slots"), ("cwr", "cwr, no replay")):
            sizes = arena_by_buffer(args.model, LearnOptions(strategy=strategy, lr_layer="head", q_f=8, q_b=16))
            print(f"  {what}: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    return 0
