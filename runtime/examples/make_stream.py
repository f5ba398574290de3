"""Write a continual-learning stream as IDX files, one pair per experience plus the test set, for the C learner's
example program (runtime/examples/learn_stream.c), which needs no Python.

Run with the project's venv::

    .venv/bin/python runtime/examples/make_stream.py --config configs/demo.toml --out DIR
    .venv/bin/python runtime/examples/make_stream.py --synthetic --out DIR [--seed 0 --shape 8x8x1 --classes 10
                                                     --class-sets 0,1,2/2,3,4/0,4,5 --per-experience 40 --test 60]

``--config``: the stream the config names, as ``bnncl device learn --config`` builds it
(:func:`bnncl.data.config.validate` and :func:`~bnncl.data.config.build_stream`, the config's seed included): the
same experiences, the same images in the same order. ``--synthetic``: a tiny stream for tests and trials: each class a
random prototype image, each image its class's prototype plus noise (seeded), the experiences' classes as
``--class-sets`` says (they may revisit classes).

Writes ``DIR/exp<k>-images.idx``, ``DIR/exp<k>-labels.idx`` per experience and ``DIR/test-images.idx``,
``DIR/test-labels.idx``: the MNIST IDX format (big-endian; images ``0x00000803`` N x H x W uint8 for one channel,
``0x00000804`` N x H x W x C otherwise; labels ``0x00000801`` N uint8), each file atomically (a temporary file beside
it, fsync'd, renamed: :func:`bnncl.core.atomic.atomic_write`). Prints learn_stream's arguments for the stream, and
with ``--config`` the options that match the config's ``[learn]`` section.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np

UBYTE = 0x08


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 ``array`` (1 to 4 dimensions): magic 0x0000 08 NN, NN the dimensions, then each size as a
    big-endian uint32, then the bytes in C order."""
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8 or not 1 <= a.ndim <= 4:
        raise ValueError(f"IDX here holds uint8 arrays of 1 to 4 dimensions, not {a.dtype} {a.shape}")
    return struct.pack(">HBB", 0, UBYTE, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def images_idx(x: np.ndarray) -> bytes:
    """NHWC uint8 images: N x H x W for one channel (the MNIST files' shape), else N x H x W x C."""
    return idx_bytes(x[..., 0] if x.shape[-1] == 1 else x)


def labels_idx(y: np.ndarray, classes: int) -> bytes:
    y = np.asarray(y)
    if len(y) and (y.min() < 0 or y.max() > 255):
        raise ValueError(f"labels {int(y.min())}..{int(y.max())}: an IDX label file holds 0..255")
    if classes > 256:
        raise ValueError(f"{classes} classes: an IDX label file holds 256 at most")
    return idx_bytes(y.astype(np.uint8))


def write_stream(out: Path, experiences, test, classes: int) -> list[str]:
    """Every file (atomically); learn_stream's arguments: the experiences' files in order, then --test."""
    from bnncl.core.atomic import atomic_write_bytes

    args = []
    for k, (x, y) in enumerate(experiences):
        for kind, data in (("images", images_idx(x)), ("labels", labels_idx(y, classes))):
            atomic_write_bytes(out / f"exp{k}-{kind}.idx", data)
            args.append(str(out / f"exp{k}-{kind}.idx"))
    if test is not None:
        atomic_write_bytes(out / "test-images.idx", images_idx(test[0]))
        atomic_write_bytes(out / "test-labels.idx", labels_idx(test[1], classes))
        args += ["--test", str(out / "test-images.idx"), str(out / "test-labels.idx")]
    return args


def synthetic(seed: int, shape: tuple[int, int, int], classes: int, class_sets: list[list[int]], per_experience: int,
              test: int):
    """Prototype-plus-noise images: (experiences, test set), each a list of (NHWC uint8 images, int64 labels)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(classes, *shape)).astype(np.float64)

    def draw(labels):
        x = prototypes[labels] + rng.normal(0.0, 48.0, size=(len(labels), *shape))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), labels.astype(np.int64)

    experiences = [draw(rng.choice(np.array(cs), per_experience)) for cs in class_sets]
    seen = sorted({c for cs in class_sets for c in cs})
    return experiences, draw(rng.choice(np.array(seen), test))


def learn_flags(options) -> list[str]:
    """learn_stream's options for a LearnOptions (the ones the C learner takes; its bits only where the config's are
    the integer step's, at most 16: a config's default 32 is the fp32 learner, which stays in Python)."""
    flags = ["--strategy", options.strategy, "--epochs", str(options.epochs), "--batch-size", str(options.batch_size),
             "--replay-size", str(options.replay_size), "--replay-batch", str(options.replay_batch),
             "--replay-storage", options.replay_storage, "--replay-update", options.replay_update,
             "--replay-mix", options.replay_mix, "--rounding", options.q_rounding, "--lr", repr(options.lr),
             "--seed", str(options.seed)]
    if options.q_b <= 16:
        flags += ["--q-f", str(options.q_f), "--q-b", str(options.q_b)]
    return flags


def _shape(text: str) -> tuple[int, int, int]:
    try:
        h, w, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give HxWxC, e.g. 8x8x1") from None
    if min(h, w, c) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size at least 1")
    return h, w, c


def _class_sets(text: str) -> list[list[int]]:
    try:
        sets = [[int(c) for c in part.split(",")] for part in text.split("/")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give classes per experience, e.g. 0,1,2/2,3,4") from None
    return sets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="a TOML config (as bnncl learn / bnncl device learn take)")
    src.add_argument("--synthetic", action="store_true", help="a tiny prototype-plus-noise stream")
    ap.add_argument("--out", type=Path, required=True, help="the directory to write the IDX files into")
    ap.add_argument("--data", help="the dataset's directory (the config's data, for datasets without a default)")
    ap.add_argument("--seed", type=int, default=0, help="--synthetic: the seed (default 0)")
    ap.add_argument("--shape", type=_shape, default=(8, 8, 1), help="--synthetic: HxWxC (default 8x8x1)")
    ap.add_argument("--classes", type=int, default=10, help="--synthetic: the model's classes (default 10)")
    ap.add_argument("--class-sets", type=_class_sets, default=[[0, 1, 2], [2, 3, 4], [0, 4, 5]],
                    help="--synthetic: each experience's classes, e.g. 0,1,2/2,3,4/0,4,5 (the default)")
    ap.add_argument("--per-experience", type=int, default=40, help="--synthetic: images per experience (default 40)")
    ap.add_argument("--test", type=int, default=60, help="--synthetic: test images (default 60; 0: no test set)")
    args = ap.parse_args(argv)

    from bnncl.core.atomic import check_writable_dir
    from bnncl.core.errors import BnnclError

    try:
        check_writable_dir(args.out)
        if args.synthetic:
            if not 1 <= args.classes <= 256 or args.per_experience < 1 or args.test < 0:
                ap.error("--classes 1..256, --per-experience at least 1, --test at least 0")
            bad = [c for cs in args.class_sets for c in cs if not 0 <= c < args.classes]
            if bad:
                ap.error(f"--class-sets: class {bad[0]} is not one of the {args.classes} classes")
            exps, test = synthetic(args.seed, args.shape, args.classes, args.class_sets, args.per_experience,
                                   args.test)
            files = write_stream(args.out, exps, test if args.test else None, args.classes)
            name, flags = f"synthetic (seed {args.seed})", []
        else:
            from bnncl.core.protocol import DEVICE_STRATEGIES
            from bnncl.data.config import build_stream, learn_options, load_config, validate

            cfg = load_config(args.config)
            if args.data:
                cfg["data"] = args.data
            # as run_device_experiment builds it: the model file is the backbone (no checkpoint, no [pretrain])
            cfg = validate({**{k: v for k, v in cfg.items() if k != "checkpoint"}, "pretrain": {}})
            stream, _ = build_stream(cfg)
            exps = [(e.data.x, e.data.y) for e in stream.experiences]
            files = write_stream(args.out, exps, (stream.test.x, stream.test.y), stream.num_classes)
            name = f"{stream.name} (test {len(stream.test)})"
            flags = [(s, learn_flags(learn_options(cfg, s))) for s in cfg["strategies"] if s in DEVICE_STRATEGIES]
    except BnnclError as e:
        print(f"make_stream: {e}", file=sys.stderr)
        return 1
    print(f"{name}: {len(exps)} experiences ({', '.join(str(len(x)) for x, _ in exps)} images) written to "
          f"{args.out}")
    print("learn_stream MODEL.bnn STATE " + " ".join(files))
    for strategy, f in flags:
        note = "" if "--q-f" in f else " (its q_f/q_b are 32, the fp32 learner's: learn_stream's default 8/16 apply)"
        print(f"  the config's [learn] for {strategy}: {' '.join(f)}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
