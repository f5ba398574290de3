"""Writers of small datasets in exactly the official on-disk formats, for tests (no real data is needed); a model
with random per-channel vectors; the float32 rounding bounds that tests hold results computed in another order to."""

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
