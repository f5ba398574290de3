"""The exported model on the device runtime against the torch model in eval mode, on the whole Fashion-MNIST test set.

For each checkpoint: export it, run the frozen part and the whole network on both device backends (packed: the
bit-packed kernels, the C runtime's; float: the NumPy float equivalent) and in torch, and count where they differ:
predictions, the latent-replay layer's signs (where it is binary) or its largest relative error (where it is
real-valued), logits.

    python benchmarks/equivalence.py [CHECKPOINT ...]
        (default: runs/bench/pretrain/model.pt runs/demo/pretrain/model.pt)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bnncl.checkpoint import load_model  # noqa: E402
from bnncl.data import load_dataset  # noqa: E402
from bnncl.device import Model  # noqa: E402
from bnncl.export import export_checkpoint  # noqa: E402
from bnncl.models import normalize_tensor  # noqa: E402
from common import describe_machine  # noqa: E402

CHUNK = 1000


def torch_outputs(model, lr_layer, images):
    frozen, trainable = model.split(lr_layer)
    latents, logits = [], []
    with torch.inference_mode():
        for i in range(0, len(images), CHUNK):
            z = frozen(normalize_tensor(torch.from_numpy(images[i:i + CHUNK])))
            latents.append(z.permute(0, 2, 3, 1).numpy())
            logits.append(trainable(z).numpy())
    return np.concatenate(latents), np.concatenate(logits)


def device_outputs(device, images, backend):
    latents, logits = [], []
    for i in range(0, len(images), CHUNK):
        act = device.latent(images[i:i + CHUNK], backend)
        latents.append(act.signs() if act.real is None else act.real)
        logits.append(device.logits_from_latent(act, backend))
    return np.concatenate(latents), np.concatenate(logits)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", default=["runs/bench/pretrain/model.pt", "runs/demo/pretrain/model.pt"])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(2)
    test = load_dataset("fashion-mnist", args.data, "test")
    print(f"machine: {describe_machine()}")
    print(f"data: {test.name}, {len(test)} images\n")
    print("| checkpoint | LR layer | latent | backend | accuracy device / torch | predictions differing | "
          "latent: signs differing / max rel. error | images whose latent differs | logits max rel. error |")
    print("|---|---|---|---|---|---:|---|---:|---:|")
    tmp = Path(tempfile.mkdtemp(prefix="bnncl-equiv-"))
    for ckpt in args.checkpoints:
        if not Path(ckpt).is_file():
            print(f"| {ckpt} | (missing: skipped) | | | | | | |")
            continue
        export_checkpoint(ckpt, tmp / "model.bnn")
        device = Model.load(tmp / "model.bnn")
        model, _ = load_model(ckpt)
        t_lat, t_log = torch_outputs(model, device.lr_layer, test.x)
        binary = device.frozen_ops[-1].name == "binarize"
        for backend in ("packed", "float"):
            d_lat, d_log = device_outputs(device, test.x, backend)
            pred, t_pred = d_log.argmax(1), t_log.argmax(1)
            if binary:
                differ = (d_lat != t_lat).reshape(len(test), -1)
                latent = f"{int(differ.sum()):,} of {t_lat.size:,} signs"
            else:  # a real-valued latent differs visibly only where a sign flipped at a tie upstream
                differ = (np.abs(d_lat - t_lat) > 1e-4 * np.abs(t_lat).max()).reshape(len(test), -1)
                latent = f"{np.abs(d_lat - t_lat).max() / np.abs(t_lat).max():.1e}"
            images = int(differ.any(axis=1).sum())
            print(f"| {ckpt} | {device.lr_layer} | {'1-bit' if binary else 'float32'} | {backend} | "
                  f"{(pred == test.y).mean():.2%} / {(t_pred == test.y).mean():.2%} | {int((pred != t_pred).sum())} | "
                  f"{latent} | {images} | {np.abs(d_log - t_log).max() / np.abs(t_log).max():.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
