"""Writers of small datasets in exactly the official on-disk formats, for tests (no real data is needed); a model
with random per-channel vectors; the float32 rounding bounds that tests hold results computed in another order to;
the torch simulation's tiny backbone, stream and options."""

from __future__ import annotations

import gzip
import math
import pickle
from pathlib import Path

import numpy as np


def idx_bytes(arr: np.ndarray) -> bytes:
    """An idx file: magic 0 0 0x08 ndim, big-endian uint32 sizes, then the bytes."""
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.tobytes()


def make_images(n: int, hw, channels: int, num_classes: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent images (a bright band whose position encodes the class) plus noise, and balanced labels."""
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    h, w = hw
    x = rng.integers(0, 60, size=(n, h, w, channels), dtype=np.uint8)
    band = max(1, h // num_classes)
    for i, c in enumerate(y):
        x[i, (c * band) % h: (c * band) % h + band] = 220
    return x, y.astype(np.uint8)


def write_idx_dataset(root, n_train=60, n_test=20, hw=(28, 28), num_classes=10, gz=True, seed=0, sep="-"):
    """``train-images-idx3-ubyte[.gz]`` and friends; returns the arrays written (x without channel axis)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = make_images(n, hw, 1, num_classes, rng)
        for kind, arr in (("images", x[..., 0]), ("labels", y)):
            dims = "idx3" if kind == "images" else "idx1"
            name = f"{stem}-{kind}{sep}{dims}-ubyte" + (".gz" if gz else "")
            data = idx_bytes(arr)
            (root / name).write_bytes(gzip.compress(data) if gz else data)
        out[split] = (x[..., 0], y)
    return out


def write_cifar10(root, per_batch=12, test=10, seed=0, folder=True, key_type=str):
    """``cifar-10-batches-py/`` with data_batch_1..5, test_batch, batches.meta as protocol-2 pickles.

    ``key_type=bytes`` writes keys as byte strings, as a Python 2 pickle read without latin1 would have them.
    """
    root = Path(root)
    d = root / "cifar-10-batches-py" if folder else root
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = (lambda s: s.encode()) if key_type is bytes else (lambda s: s)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({k("label_names"): names, k("num_cases_per_batch"): per_batch, k("num_vis"): 3072}, f, protocol=2)
    out = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        x, y = make_images(n, (32, 32), 3, 10, rng)
        flat = x.transpose(0, 3, 1, 2).reshape(n, 3072)  # channel-major rows, as the official files store them
        with open(d / name, "wb") as f:
            pickle.dump({k("batch_label"): name, k("labels"): [int(v) for v in y], k("data"): flat,
                         k("filenames"): [f"img_{i}.png" for i in range(n)]}, f, protocol=2)
        out[name] = (x, y)
    return out


CORE50_BATCHES = {"ni": 8, "nc": 9, "nicv2_79": 79}


def write_core50(root, scenarios=("ni", "nc"), runs=2, per_batch=4, n_images=120, seed=0, images="npz",
                 compressed=False):
    """``paths.pkl``, ``labels.pkl``, ``LUP.pkl`` ([scenario][run][batch], last batch = test) and the images.

    The images are 128x128x3 with a value derived from the object id, so tests can check that indices, labels and
    pixels line up. ``images``: "npz" (core50_imgs.npz, array x) or "folders" (core50_128x128/sS/oO/*.png).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    objects = np.arange(n_images) % 50
    sessions = 1 + (np.arange(n_images) // 50) % 11
    paths = [f"s{s}/o{o + 1}/C_{s:02d}_{o + 1:02d}_{i:03d}.png" for i, (s, o) in enumerate(zip(sessions, objects))]
    x = np.zeros((n_images, 128, 128, 3), np.uint8)
    x[:] = (objects * 5)[:, None, None, None]
    x[:, 0, 0, 0] = np.arange(n_images) % 256  # a per-image fingerprint
    lup, labels = {}, {}
    for sc in scenarios:
        lup[sc], labels[sc] = [], []
        for _ in range(runs):
            nb = CORE50_BATCHES.get(sc, 3) + 1
            idx = [rng.choice(n_images, size=per_batch, replace=False).tolist() for _ in range(nb)]
            lup[sc].append(idx)
            labels[sc].append([[int(objects[i]) for i in b] for b in idx])
    for name, obj in (("paths.pkl", paths), ("LUP.pkl", lup), ("labels.pkl", labels)):
        with open(root / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    if images == "npz":
        (np.savez_compressed if compressed else np.savez)(root / "core50_imgs.npz", x=x)
    else:
        from PIL import Image

        for p, img in zip(paths, x):
            f = root / "core50_128x128" / p
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(f)
    return {"x": x, "objects": objects, "paths": paths, "lup": lup, "labels": labels}


def randomized(config, seed: int):
    """A model (``BackboneConfig``) whose every per-channel vector and BN statistic is random, so thresholds, slopes
    and folded multipliers are all non-trivial (a freshly built model has zero shifts and unit BN). Eval mode."""
    import torch

    from bnncl.models import build_model

    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith(("bn.weight", "scale")) else 0.0) + 0.3 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.5 * torch.randn_like(m.running_mean))
                m.running_var.copy_(0.5 + torch.rand_like(m.running_var))
    return model.eval()


# -- float32 rounding: what a sum computed in another order may differ by ------------------------------------------

F32_UNIT = 2.0 ** -24  # float32's unit roundoff: one correctly rounded operation errs by at most this, relatively
F64_UNIT = 2.0 ** -53  # float64's


def float32_sum_bound(abs_terms, terms: int, unit: float = F32_UNIT) -> np.ndarray:
    """The most a float32 sum of ``terms`` terms (each exact or rounded once) can differ from the exact sum, in any
    summation order, for any vector width or FMA use: ``gamma_n * sum|term|`` with ``gamma_n = n u / (1 - n u)``
    (Higham, Accuracy and Stability of Numerical Algorithms, sec. 3.1), ``n = terms``. ``abs_terms``: the sum of the
    terms' magnitudes (float64), elementwise. ``unit=F64_UNIT``: the same for a float64 sum (an oracle's)."""
    n = float(terms)
    assert n * unit < 0.5, "too many terms for the bound"
    return n * unit / (1 - n * unit) * np.asarray(abs_terms, np.float64)


def assert_within_float32(ours, theirs, bound, what: str) -> None:
    """``|ours - theirs| <= bound`` elementwise (``bound`` from :func:`float32_sum_bound`, plus whatever roundings
    the caller adds), with the worst offender in the message."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, f"{what}: shapes {ours.shape} vs {theirs.shape}"
    excess = np.abs(ours - theirs) - np.broadcast_to(bound, ours.shape)
    worst = np.unravel_index(int(np.argmax(excess)), ours.shape) if ours.size else None
    assert ours.size == 0 or excess[worst] <= 0, (
        f"{what}: |{ours[worst]!r} - {theirs[worst]!r}| exceeds the float32 bound "
        f"{np.broadcast_to(bound, ours.shape)[worst]:.3g} at {worst}")


EXP_ULPS = 4  # float32 exp and log in NumPy and torch are within a few ulps (not correctly rounded): 4 allowed


def float32_head_step_bounds(w, h, y, lr):
    """The exact (float64) SGD step of the head and how far any float32 computation of it may be, in any summation
    order: (new w, gradient, loss) and a bound for each. Each float32 operation errs by at most u relatively (exp and
    log by EXP_ULPS u); sums of K terms by gamma_K * sum|term| (``float32_sum_bound``); second-order terms are covered
    by a factor 1.1."""
    u = F32_UNIT
    w64, h64 = w.astype(np.float64), h.astype(np.float64)
    (batch, features), classes = h.shape, w.shape[0]
    z = h64 @ w64.T
    ez = float32_sum_bound(np.abs(h64) @ np.abs(w64).T, features).max(axis=1, keepdims=True)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    prob = e / e.sum(axis=1, keepdims=True)
    # exp(z_j - max): the two logits' errors, the subtraction's rounding, exp's own; then the sum of the classes'
    # exps (gamma_C) and the division (u): a relative error of p
    rel_exp = 2 * ez + u * np.abs(shifted).max(axis=1, keepdims=True) + EXP_ULPS * u
    rel_p = 1.1 * (2 * rel_exp + float32_sum_bound(1.0, classes) + u)
    one = np.zeros_like(prob)
    one[np.arange(batch), y] = 1
    d = (prob - one) / batch
    ed = (prob * rel_p + 2 * u * np.abs(prob - one)) / batch  # p's error, then the subtraction and the division
    g = d.T @ h64
    eg = ed.T @ np.abs(h64) + float32_sum_bound(np.abs(d).T @ np.abs(h64), batch)
    new_w = w64 - lr * g
    ew = 1.1 * (lr * eg + 3 * u * (np.abs(w64) + lr * np.abs(g)))  # lr in float32, the product, the subtraction
    logp = np.log(prob[np.arange(batch), y])
    loss = -logp.mean()
    eloss = 1.1 * (np.mean(rel_p[:, 0] + EXP_ULPS * u * np.abs(logp)) + float32_sum_bound(np.abs(logp).mean(), batch))
    return (new_w, ew), (g, eg), (loss, eloss)


# -- float32 rounding through a whole network: the order of the error, not a worst case ------------------------------

def reduction_terms(module, x, backward: bool = False) -> int:
    """How many terms, in total, the sums a value of ``module(x)`` went through have (torch module, torch input):
    per convolution ``k*k*Cin``, per batch norm in training ``2*N*H*W`` (mean and variance), per average pool its
    window (global: ``H*W``), per linear layer its inputs. ``backward``: also the sums of the backward pass (a
    convolution's input
    gradient ``k*k*Cout`` and weight gradient ``N*Hout*Wout``, batch norm's two reductions of the gradient, a linear
    layer's input gradient and weight gradient). Counted with forward hooks on one forward pass of a copy (batch
    norm's running statistics stay as they are)."""
    import copy

    import torch

    module = copy.deepcopy(module)
    counts, hooks = [], []

    def hook(m, inputs, out):
        i = inputs[0]
        if isinstance(m, torch.nn.Conv2d):
            kk = m.kernel_size[0] * m.kernel_size[1]
            counts.append(kk * m.in_channels // m.groups)
            if backward:
                counts.extend([kk * m.out_channels // m.groups, out.shape[0] * out.shape[2] * out.shape[3]])
        elif isinstance(m, torch.nn.BatchNorm2d) and m.training:
            counts.append((4 if backward else 2) * i.shape[0] * i.shape[2] * i.shape[3])
        elif isinstance(m, torch.nn.Linear):
            counts.append(m.in_features)
            if backward:
                counts.extend([m.out_features, i.shape[0]])
        elif isinstance(m, torch.nn.AvgPool2d):
            counts.append(m.kernel_size ** 2 if isinstance(m.kernel_size, int) else math.prod(m.kernel_size))
        elif type(m).__name__ == "GlobalAvgPool":
            counts.append(i.shape[2] * i.shape[3])

    for m in module.modules():
        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return sum(counts)


def float32_chain_bound(terms: int, magnitude, unit: float = F32_UNIT) -> float:
    """Of the order of how far a float32 computation through a network may be from its exact (float64) value:
    ``terms * u * magnitude``, with ``terms`` the total number of terms of the sums it went through
    (:func:`reduction_terms`) and ``magnitude`` the largest value of the result. Each sum of K terms errs by at most
    ``gamma_K`` of its terms' magnitudes (:func:`float32_sum_bound`), and a well-scaled layer (batch norm after each
    convolution, softmax) passes on the error of its input at about its size, so the errors of the sums add up. It is
    an estimate of the order, not a worst case: cancellation in a sum or a layer
    with a gain above one could exceed it, and a float32 result here far below it in every test is the usual case.
    Two float32 computations in different orders differ by up to twice this."""
    return terms * unit * float(magnitude)


# -- the torch simulation on a tiny backbone and a tiny class-incremental stream -----------------------------------

def synthetic(per_class, seed, name):
    """``per_class`` 8x8 grey images of each of 4 classes (a class-dependent bright band plus noise), shuffled."""
    from bnncl.data.arrays import LabelledArrays

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), per_class)
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(len(y), 8, 8, 1), dtype=np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c: 2 * c + 2] = 220  # a class-dependent bright band
    return LabelledArrays(x, y.astype(np.int64), ("a", "b", "c", "d"), name)


def tiny_nc_stream():
    """``(train, test, stream)``: 12 training and 4 test images per class, an NC stream of 2 experiences (seed 0)."""
    from bnncl.data.scenarios import nc

    train, test = synthetic(12, 0, "train"), synthetic(4, 1, "test")
    return train, test, nc(train, test, n_experiences=2, seed=0)


def tiny_sim_model(seed=0, **config):
    """The simulation's tiny backbone for :func:`tiny_nc_stream` (8x8x1 images, 4 classes; ``config`` overrides)."""
    import torch

    from bnncl.models import BackboneConfig, build_model

    torch.manual_seed(seed)
    base = dict(input_shape=(8, 8, 1), num_classes=4, stem_channels=4, stages=((4, 1, 1), (8, 1, 2)))
    return build_model(BackboneConfig(**{**base, **config}))


def sim_options(strategy, **kw):
    """Small ``LearnOptions`` for :func:`tiny_nc_stream` (2 epochs, minibatches of 8, 8 replay slots, seed 3)."""
    from bnncl.core.options import LearnOptions

    base = dict(strategy=strategy, epochs=2, batch_size=8, lr=0.05, replay_size=8, seed=3)
    return LearnOptions(**{**base, **kw})


def run_capturing(monkeypatch, model, opts, stream):
    """run_stream, keeping hold of the learner it builds (it trains a deep copy of ``model``)."""
    from bnncl.simulation import run as run_mod

    captured = {}
    original = run_mod.build_strategy

    def wrapper(m, o):
        captured["learner"] = original(m, o)
        return captured["learner"]

    monkeypatch.setattr(run_mod, "build_strategy", wrapper)
    result = run_mod.run_stream(model, stream, opts, progress=False)
    return result, captured["learner"]


# -- exported models of several shapes (the export and the device model against each other) -----------------------

# Backbones of several shapes, each exported by :func:`exported_randomized` (tests/test_export.py, test_model.py).
EXPORT_CONFIGS = {
    "fmnist": dict(input_shape=(28, 28, 1), stem_channels=32, stages=((32, 2, 2), (64, 2, 2), (128, 2, 2)),
                   name="fmnist"),
    "boundary": dict(input_shape=(28, 28, 1), stem_channels=32, stages=((32, 2, 2), (64, 2, 2), (128, 2, 2)),
                     binary_boundary="block5", name="fmnist"),
    # odd widths (not multiples of 64), RGB, a strided stem, the binary 1x1-conv shortcut, odd sizes (9 -> 5 -> 3)
    "odd": dict(input_shape=(9, 9, 3), stem_channels=5, stem_stride=1, stages=((70, 1, 2), (130, 2, 2)),
                shortcut="binary", binary_boundary="block3"),
    "strided-stem": dict(input_shape=(16, 12, 3), stem_channels=33, stem_stride=2, stages=((33, 1, 1), (66, 1, 2))),
}


def exported_randomized(name: str, directory):
    """``EXPORT_CONFIGS[name]`` (7 classes) randomized, saved and exported: (torch model, device Model, 12 images)."""
    from bnncl.checkpoint import save_checkpoint
    from bnncl.device import Model
    from bnncl.export import export_checkpoint
    from bnncl.models import BackboneConfig

    config = BackboneConfig(num_classes=7, **EXPORT_CONFIGS[name])
    model = randomized(config, seed=len(name))
    d = Path(directory)
    save_checkpoint(d / "model.pt", model)
    export_checkpoint(d / "model.pt", d / "model.bnn")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(12, *config.input_shape), dtype=np.uint8)
    return model, Model.load(d / "model.bnn"), images


# -- oracles of the device kernels' tests (tests/device/kernels) ------------------------------------------------------

ODD_CHANNELS = [1, 3, 33, 63, 64, 65, 70, 130]


def signs(a):
    return np.where(a < 0, -1.0, 1.0)


def float_conv_oracle(x, w, bias, stride, pad, pad_value=0.0):
    """Direct float64 convolution, NHWC input, (Cout, kh, kw, Cin) weights, constant padding ``pad_value``."""
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
    w = np.asarray(w, np.float64)
    n, h, wd, _ = xp.shape
    cout, kh, kw, _ = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, ho, wo, cout))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, i, j] = np.einsum("nyxc,oyxc->no", win, w)
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def packed_bits_oracle(below):
    """Boolean (..., C) -> uint64 words (..., ceil(C/64)) with plain Python ints: bit j of word w is channel 64w+j."""
    c = below.shape[-1]
    nw = (c + 63) // 64
    flat = below.reshape(-1, c)
    out = np.zeros((flat.shape[0], nw), np.uint64)
    for r in range(flat.shape[0]):
        for t in range(nw):
            word = 0
            for j in range(min(64, c - 64 * t)):
                if flat[r, 64 * t + j]:
                    word |= 1 << j
            out[r, t] = word
    return out.reshape(*below.shape[:-1], nw)


def assert_same_bits(got, ref, what):
    """The same values of the same shape; float arrays also of the same dtype and bit patterns (signed zeros, NaNs).
    Tuples (the epilogue's (real, bits)) element by element; None only against None."""
    if isinstance(ref, tuple):
        assert isinstance(got, tuple) and len(got) == len(ref), what
        for i, (g, r) in enumerate(zip(got, ref)):
            assert_same_bits(g, r, f"{what}[{i}]")
        return
    if ref is None or got is None:
        assert got is None and ref is None, what
        return
    assert got.shape == ref.shape, what
    np.testing.assert_array_equal(got, ref, err_msg=what)
    if np.issubdtype(ref.dtype, np.floating):
        assert got.dtype == ref.dtype, what
        bits = np.dtype(f"u{ref.dtype.itemsize}")
        np.testing.assert_array_equal(got.view(bits), ref.view(bits), err_msg=what)


def head_bound(model, latent) -> np.ndarray:
    """Per logit, how far two float32 computations of a device model's bias-free head may differ (the C runtime's
    fixed order against BLAS's): twice ``gamma_F * sum_f |feature_f * weight_f|``, the features computed from the LR
    layer's ``latent`` (an ``Activation``) by the packed backend."""
    feats = model._run(model.trainable_ops[:-1], latent, "packed").real.astype(np.float64)
    w = model.ops[-1].weight.astype(np.float64)
    return 2 * float32_sum_bound(np.abs(feats) @ np.abs(w).T, w.shape[1])
