"""Model-level test vectors for the C runtime (runtime/tests/test_model.c, fuzz_model.c): exported models and what
the Python runtime's packed backend computes on them.

Run with the project's venv from runtime/: ``../.venv/bin/python tests/make_model.py OUT_DIR`` (the Makefile does,
once, into build/models). For each case of ``CASES`` -- a config of tests/fixtures.py's ``EXPORT_CONFIGS`` and the
latent-replay layer it is exported with (None: the export's default): 'fmnist' (a real-valued LR layer), 'boundary'
(a binary one, at the binary boundary), 'odd' (the binary 1x1 shortcut, RGB, channel counts that are not multiples
of 64), 'odd-binarize' (the LR layer at the binarize layer itself, a valid split point whose latent is the packed
signs) and 'strided-stem-head' (a strided stem, the LR layer at the head: the latent is the pooled features) -- a
model with random per-channel vectors and BN statistics (``fixtures.randomized``, 7 classes) is saved
(``bnncl.checkpoint.save_checkpoint``) and exported (``bnncl.export.export_checkpoint``), and ``IMAGES`` random uint8
images (seeded: the same files on every run) go
through ``bnncl.device.Model``'s packed backend: its ``latent`` (``.bits`` where the LR layer is binary, else
``.real``) and its ``logits``, with the float64 bound of the head's sums per logit: twice ``gamma_F * sum_f
|feature_f * weight_cf|`` (two float32 sums of F terms in different orders: C's fixed one and BLAS's; as
``fixtures.head_bound``).

Files (all little-endian):

* ``OUT_DIR/MANIFEST``: one case name per line, ASCII.
* ``OUT_DIR/<name>.bnn``: the model file as ``bnncl export`` wrote it (docs/model-format.md).
* ``OUT_DIR/<name>.expect``: what the C runtime must give for it:

  ==================  ===========================================================================================
  ``magic``           8 bytes, ``BNNMOD1\\0``
  12 x uint32         n (images), height, width, channels, classes, layers, lr_layer, latent_binary,
                      latent_height, latent_width, latent_channels, latent_count (the elements of one image's
                      latent: H x W x words uint64 when binary, else H x W x C float32)
  ``images``          n x height x width x channels uint8
  ``latent``          n x latent_count: uint64 (binary) or float32
  ``logits``          n x classes float32, the packed backend's
  ``bound``           n x classes float64, the head's bound per logit (above)
  ``labels``          n int32, the packed backend's argmax (the first maximum)
  ==================  ===========================================================================================
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))  # tests/fixtures.py

from fixtures import EXPORT_CONFIGS, head_bound, randomized  # noqa: E402

CASES = {"fmnist": ("fmnist", None), "boundary": ("boundary", None), "odd": ("odd", None),
         "odd-binarize": ("odd", "binarize"), "strided-stem-head": ("strided-stem", "head")}
IMAGES = 6
CLASSES = 7
MAGIC = b"BNNMOD1\0"


def export(name: str, out: Path, seed: int) -> None:
    config_name, lr_layer = CASES[name]
    from bnncl.checkpoint import save_checkpoint
    from bnncl.device import Model
    from bnncl.export import export_checkpoint
    from bnncl.models import BackboneConfig

    config = BackboneConfig(num_classes=CLASSES, **EXPORT_CONFIGS[config_name])
    model = randomized(config, seed=len(config_name))
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "model.pt", model)
        export_checkpoint(Path(tmp) / "model.pt", out / f"{name}.bnn", lr_layer=lr_layer)
    dev = Model.load(out / f"{name}.bnn")
    h, w, c = dev.input_shape
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(IMAGES, h, w, c), dtype=np.uint8)
    latent = dev.latent(images, "packed")
    binary = latent.real is None
    lat = np.ascontiguousarray(latent.bits if binary else latent.real)
    assert lat.dtype == (np.uint64 if binary else np.float32) and lat.ndim in (2, 4), (lat.dtype, lat.shape)
    logits = np.ascontiguousarray(dev.logits(images, "packed"), np.float32)
    bound = np.ascontiguousarray(head_bound(dev, latent), np.float64)
    labels = logits.argmax(axis=1).astype(np.int32)
    names = [op.name for op in dev.ops]
    lh, lw = lat.shape[1:3] if lat.ndim == 4 else (1, 1)  # the head's latent: the pooled features (N, C)
    header = (IMAGES, h, w, c, dev.num_classes, len(names), names.index(dev.lr_layer), int(binary), lh, lw,
              latent.channels, lat[0].size)
    with open(out / f"{name}.expect", "wb") as f:
        f.write(MAGIC + struct.pack("<12I", *header))
        for arr in (images, lat, logits, bound, labels):
            f.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    size = (out / f"{name}.bnn").stat().st_size
    print(f"{name}: {size} B model, {len(names)} layers, LR layer {dev.lr_layer} (#{names.index(dev.lr_layer)}, "
          f"{'binary' if binary else 'real'} {lh}x{lw}x{latent.channels}), {IMAGES} images")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    for k, name in enumerate(CASES):
        export(name, args.out, seed=100 + k)
    (args.out / "MANIFEST").write_text("".join(f"{name}\n" for name in CASES))


if __name__ == "__main__":
    main()
