"""The device runtime's model: load an exported model file, run the frozen part to the latent-replay layer, and
predict. NumPy and the C runtime's kernels (the packed backend) only: inference never imports numba.

    from bnncl.device import Model
    model = Model.load("model.bnn")
    labels = model.predict(images)          # uint8 (N, H, W, C), or (N, H, W) for one channel
    latent = model.latent(images)           # the LR layer's activation (packed bits where it is binary)
"""

from __future__ import annotations

import os
import time

import numpy as np

from bnncl.core.errors import ConfigError, DataError
from bnncl.core.functional import normalize_images
from bnncl.device.modelfile import ModelFileError, read_model_file
from bnncl.device.ops import BACKENDS, Activation, Binarize, Block, FoldedStem, Head, Op, _below, build_op, link


def _check_meta(meta: dict, path) -> None:
    """The metadata fields the runtime reads, with their types: a correctly checksummed file can still have been
    written wrong (by another tool, or a bug), and must be refused, not half-used."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ModelFileError(f"{path}: inconsistent model file metadata ({what})")

    shape = meta.get("input_shape")
    need(isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and v > 0 for v in shape),
         f"input_shape {shape!r} is not three positive whole numbers")
    names = meta.get("class_names")
    need(isinstance(names, list) and len(names) > 0 and all(isinstance(n, str) for n in names),
         "class_names is not a list of names")
    need(isinstance(meta.get("lr_layer"), str), "lr_layer is not a layer name")
    layers = meta.get("layers")
    need(isinstance(layers, list) and len(layers) > 0 and all(isinstance(ly, dict) and isinstance(ly.get("kind"), str)
                                                              and isinstance(ly.get("name"), str) for ly in layers),
         "layers is not a list of layers with a kind and a name")
    need(isinstance(meta.get("architecture", {}), dict), "architecture is not a table")


# packed and float: the ops of bnncl.device.ops; c: the C runtime (bnncl.device.cruntime), the same file's bytes
RUNTIME_BACKENDS = (*BACKENDS, "c")


class Model:
    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], path: str = "<memory>", backend: str = "packed"):
        _check_meta(meta, path)
        self.meta, self.path = meta, path
        self.backend = self._check_backend(backend)  # what predict / logits / latent run on unless told otherwise
        self._c_model = None
        self.input_shape = tuple(meta["input_shape"])  # (H, W, C)
        self.class_names = list(meta["class_names"])
        self.lr_layer = meta["lr_layer"]
        # the unfolded parameters of the trainable blocks, which on-device learning starts from
        self.train_arrays = {k: v for k, v in arrays.items() if k.startswith("train.")}
        try:
            ops = [build_op(layer, arrays) for layer in meta["layers"]]
        except (KeyError, ValueError, IndexError) as e:
            raise ModelFileError(f"{path}: layer table does not match the arrays ({type(e).__name__}: {e})") from None
        names = [op.name for op in ops]
        if self.lr_layer not in names:
            raise ModelFileError(f"{path}: latent-replay layer {self.lr_layer!r} is not one of its layers")
        first = ops[0]
        if isinstance(first, FoldedStem) and first.weight.shape[-1] != self.input_shape[2]:
            raise ModelFileError(f"{path}: inconsistent model file metadata (input_shape has {self.input_shape[2]} "
                                 f"channels, the stem takes {first.weight.shape[-1]})")
        head = ops[-1]
        if not isinstance(head, Head) or head.weight.shape[0] != len(self.class_names):
            rows = head.weight.shape[0] if isinstance(head, Head) else "no"
            raise ModelFileError(f"{path}: inconsistent model file metadata ({len(self.class_names)} class names for "
                                 f"a head of {rows} rows)")
        self.ops = link(ops)
        self.cut(self.lr_layer)

    def cut(self, lr_layer: str) -> None:
        """Put the latent-replay layer at ``lr_layer``: the frozen part ends before it."""
        names = [op.name for op in self.ops]
        if lr_layer not in names[1:]:
            raise ConfigError(f"{self.path}: no layer {lr_layer!r} to put the latent-replay layer at "
                              f"(valid: {', '.join(names[1:])})")
        k = names.index(lr_layer)
        self.lr_layer = lr_layer
        self.frozen_ops, self.trainable_ops = self.ops[:k], self.ops[k:]

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "packed") -> "Model":
        """The model file at ``path``; ``backend``: what it runs on by default (packed, float, or c: the C runtime,
        which then checks and loads the same file too)."""
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"Model.load takes the path of a model file, not {path!r}")
        meta, arrays = read_model_file(path)
        model = cls(meta, arrays, str(path), backend)
        if backend == "c":
            model.c_model()
        return model

    def _check_backend(self, backend: str | None) -> str:
        backend = self.backend if backend is None else backend
        if backend not in RUNTIME_BACKENDS:
            raise ConfigError(f"unknown backend {backend!r} (valid: {', '.join(RUNTIME_BACKENDS)})")
        return backend

    def c_model(self):
        """The C runtime on this model file (:class:`bnncl.device.cruntime.CModel`), loaded on first use. It runs
        the file's own latent-replay split."""
        if self._c_model is None:
            from bnncl.device.cruntime import CModel

            try:
                blob = open(self.path, "rb").read()
            except OSError as e:
                raise ModelFileError(f"{self.path}: cannot read the model file ({e.strerror})") from None
            self._c_model = CModel(blob, self.path)
        return self._c_model

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_images(self, images) -> np.ndarray:
        """uint8 images of this model's input shape, (N, H, W, C) or (N, H, W) when C is 1; a clear error otherwise."""
        images = np.asarray(images)
        h, w, c = self.input_shape
        if images.ndim == 3 and c == 1:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1:] != (h, w, c):
            raise DataError(f"images of shape {images.shape} do not fit the model's input (N, {h}, {w}, {c})")
        if images.dtype != np.uint8:
            raise DataError(f"images must be uint8 pixels (0-255), got {images.dtype}")
        return images

    def check_labels(self, labels, n: int) -> np.ndarray:
        """Integer labels, one per image, each a class of the head: as int64 (N,), or a clear error."""
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise DataError(f"labels of shape {labels.shape} for {n} images (expected ({n},))")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"labels must be integers, got {labels.dtype}")
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if len(bad):
            raise DataError(f"label {int(bad[0])} is outside the head's {self.num_classes} classes "
                            f"(0-{self.num_classes - 1}): the head holds a row for every class it can learn, fixed "
                            "at export")
        return labels.astype(np.int64)

    # -- running the network ---------------------------------------------------------------------------------------

    def _run(self, ops: list[Op], act: Activation, backend: str, timings=None, peak: list | None = None) -> Activation:
        """``timings``: seconds per op name, added to; ``peak``: a one-item list raised to the most bytes one op's
        input and output held together."""
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r} (valid: {', '.join(BACKENDS)})")
        for op in ops:
            if op.in_threshold is not None and act.bits is None and not isinstance(op, Binarize):
                # The first op of a part, whose producer lives in the other part: binarize its input here.
                act = Activation(act.channels, act.real, _below(act.real, op.in_threshold, backend))
            t0 = time.perf_counter()
            out = op.run(act, backend)
            if peak is not None:
                peak[0] = max(peak[0], act.nbytes + out.nbytes)
            act = out
            if timings is not None:
                timings[op.name] = timings.get(op.name, 0.0) + time.perf_counter() - t0
        return act

    def latent(self, images, backend: str | None = None, timings=None, peak: list | None = None) -> Activation:
        """The frozen part: images -> the activation at the LR layer (``.bits`` packed where it is binary)."""
        backend = self._check_backend(backend)
        if backend == "c":
            if self.lr_layer != self.meta["lr_layer"]:
                raise ConfigError(f"{self.path}: the C runtime runs the file's latent-replay layer "
                                  f"{self.meta['lr_layer']!r}, not {self.lr_layer!r}")
            out = self.c_model().latent(self.check_images(images))
            channels = int(self.c_model().info.latent_channels)
            return Activation(channels, None, out) if out.dtype == np.uint64 else Activation(channels, out)
        x = normalize_images(self.check_images(images))
        return self._run(self.frozen_ops, Activation(x.shape[-1], x), backend, timings, peak)

    def logits_from_latent(self, latent: Activation, backend: str | None = None, timings=None) -> np.ndarray:
        """The trainable part: the LR layer's activation -> logits (N, classes)."""
        backend = self._check_backend(backend)
        return self._run(self.trainable_ops, latent, "packed" if backend == "c" else backend, timings).real

    def logits(self, images, backend: str | None = None, batch_size: int = 256, timings=None) -> np.ndarray:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number of images, at least 1 (not {batch_size!r})")
        backend = self._check_backend(backend)
        images = self.check_images(images)
        if backend == "c":
            return self.c_model().logits(images)
        out = []
        for i in range(0, len(images), batch_size):
            act = self.latent(images[i:i + batch_size], backend, timings=timings)
            out.append(self.logits_from_latent(act, backend, timings))
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def predict(self, images, backend: str | None = None, batch_size: int = 256) -> np.ndarray:
        """Class indices (N,) int64."""
        return self.logits(images, backend, batch_size).argmax(axis=1)

    def describe(self) -> str:
        frozen = ", ".join(op.name for op in self.frozen_ops)
        trainable = ", ".join(op.name for op in self.trainable_ops)
        return (f"{self.meta['architecture'].get('name', 'model')}: input {'x'.join(map(str, self.input_shape))}, "
                f"{self.num_classes} classes; frozen [{frozen}] -> LR layer -> trainable [{trainable}]")

    def binary_layers(self) -> list[Block]:
        return [op for op in self.ops if isinstance(op, Block)]
