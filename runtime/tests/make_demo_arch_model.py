"""A model of the demo's architecture, briefly trained, and a small Fashion-MNIST stream for it: what
``make test-cortex-m-demo`` runs the firmware on (the demo's own model, runs/demo/model.bnn, comes from ``make demo``'s
13 minutes of pretraining; this one from seconds). Run with the project's venv from runtime/::

    ../.venv/bin/python tests/make_demo_arch_model.py OUT [--config ../configs/demo.toml] [--seed 0] [--steps 60]
                                                      [--batch-size 128] [--exp0 120] [--exp1 80] [--test 32]

The model: configs/demo.toml's backbone as ``bnncl learn`` builds it when no checkpoint is given
(``bnncl.simulation.experiment.backbone_for``: the preset matching the dataset's images, fmnist: 28x28x1, stem 32,
stages (32,2,2), (64,2,2), (128,2,2), 10 classes, the config's ``[pretrain] binary_boundary`` block5), trained by the
package's own pretraining (``bnncl.training.pretrain.pretrain``, the config's pretraining options but one epoch cut
to ``--steps`` steps of ``--batch-size``) on experience 0 of the config's stream from ``--seed``, and exported as
``bnncl export`` does (``bnncl.export.export_checkpoint``, the default latent-replay layer): ``OUT/model.bnn``, from
``OUT/pretrain.pt`` (the checkpoint saved again without the optimizer and the timings). One torch thread; the same
bytes on every run with the same seed and OUT (on one machine: float sums may round differently on another CPU).

The stream (``OUT/stream``, runtime/examples/make_stream.py's IDX layout, as tests/mcu_job.py's job reads it): the
first ``--exp0`` images of the config's experience 0 (its base classes), the first ``--exp1`` of its experience 1
(two new classes), the first ``--test`` of its test set. Fashion-MNIST is read where the package's loader finds it
(Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))  # make_stream.py


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", type=Path, default=HERE.parents[1] / "configs" / "demo.toml")
    ap.add_argument("--seed", type=int, default=0, help="the weights' initialisation and the shuffle (default 0)")
    ap.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--exp0", type=int, default=120, help="images of experience 0 in the stream (default 120)")
    ap.add_argument("--exp1", type=int, default=80, help="images of experience 1 in the stream (default 80)")
    ap.add_argument("--test", type=int, default=32, help="test images (default 32)")
    a = ap.parse_args(argv)
    if min(a.steps, a.batch_size, a.exp0, a.exp1, a.test) < 1:
        ap.error("--steps, --batch-size, --exp0, --exp1 and --test: at least 1")

    import make_stream
    import torch

    from bnncl.checkpoint import read_checkpoint, save_checkpoint
    from bnncl.core.errors import BnnclError
    from bnncl.data.config import build_stream, load_config, validate
    from bnncl.export import export_checkpoint
    from bnncl.training.pretrain import PretrainOptions, pretrain

    t0 = time.perf_counter()
    try:
        cfg = validate({k: v for k, v in load_config(a.config).items() if k != "checkpoint"})
        stream, held = build_stream(cfg)
    except BnnclError as e:
        print(f"make_demo_arch_model: {e}", file=sys.stderr)
        return 1
    if held is not None or len(stream.experiences) < 2:
        raise SystemExit(f"{a.config}: a stream of at least 2 experiences and no [pretrain] holdout, please")
    base = stream.experiences[0].data
    classes = sorted(set(base.y.tolist()))
    test = stream.test.select(classes=classes)
    test = test.subset(np.arange(min(len(test), 1000)))  # the pretraining's evaluation: a thousand base images
    pre = {k: v for k, v in cfg["pretrain"].items() if k != "holdout"}
    pre.update(epochs=1, batch_size=a.batch_size)
    a.out.mkdir(parents=True, exist_ok=True)
    checkpoint = a.out / "pretrain.pt"  # a fixed path: the model file's metadata names it
    opts = PretrainOptions(dataset=cfg["dataset"], data=cfg.get("data"), dataset_options=cfg["dataset_options"],
                           seed=a.seed, subset=f"{stream.name} experience 0 (seed {cfg['seed']})", out=str(checkpoint),
                           progress=False, max_steps_per_epoch=a.steps, **pre)
    torch.set_num_threads(1)  # the same sums on any number of cores (and no two-thread contention on a busy one)
    model, result = pretrain(opts, data=(base, test))
    # saved again without the optimizer and the history's timings: the checkpoint, so the model file naming its
    # hash, the same bytes on every run
    trained = read_checkpoint(checkpoint)["meta"]
    save_checkpoint(checkpoint, model, epoch=1, meta={k: trained[k] for k in ("train_set", "class_names",
                                                                               "trained_classes")})
    meta = export_checkpoint(checkpoint, a.out / "model.bnn")
    exps = [(e.data.x[:n], e.data.y[:n]) for e, n in zip(stream.experiences[:2], (a.exp0, a.exp1))]
    make_stream.write_stream(a.out / "stream", exps, (stream.test.x[:a.test], stream.test.y[:a.test]),
                             stream.num_classes)
    (a.out / "MANIFEST").write_text("model.bnn\nstream\n")
    print(f"{a.out / 'model.bnn'}: {model.config.describe()}, LR layer {meta['lr_layer']}, "
          f"{(a.out / 'model.bnn').stat().st_size} B; {a.steps} steps of {a.batch_size} on {stream.name} experience 0 "
          f"(classes {','.join(map(str, classes))}, seed {a.seed}): loss "
          f"{result['history'][-1]['loss']:.3f}, accuracy {result['test']['accuracy']:.3f} on {len(test)} of its "
          f"test images")
    print(f"{a.out / 'stream'}: experience 0 {len(exps[0][1])} images (classes "
          f"{','.join(map(str, sorted(set(exps[0][1].tolist()))))}), experience 1 {len(exps[1][1])} (classes "
          f"{','.join(map(str, sorted(set(exps[1][1].tolist()))))}), test {a.test}; {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
