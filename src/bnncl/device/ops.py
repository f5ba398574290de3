"""The device's inference layers, built from a model file's arrays (NumPy and the C runtime's kernels, no torch, no
numba).

Each op maps an :class:`Activation` to the next one and runs on one of two backends:

* ``packed`` (the device): binary activations as bits packed into uint64 words, XNOR-popcount convs, integer dot
  products rescaled once per output by the folded BN; the kernels of :mod:`bnncl.device.kernels`, the C runtime's
  (through ctypes, a batch split over ``cruntime.set_num_threads`` threads);
* ``float`` (the exported model's float equivalent): the same folded parameters, binary activations as ±1 float32
  tensors and every binary conv an im2col matrix product (BLAS; exact, the sums being small integers). It shares no
  code with the packed kernels, so it is both the NumPy baseline of ``benchmarks/inference.py`` and an independent
  check of the packed path.

Both backends compute every float value in one fixed order (the stem's sums, pooling, the epilogue), which does not
depend on the CPU or on how many images are in the call: an image's latent is the same bit for bit whether it is
run alone or in a minibatch, on any CPU, and the two backends give the same latents. Only the head's matrix product
(BLAS) sums in an order of the library's choosing.

Fusion: when the next op only needs the signs of an op's output (a binarize layer, or the conv path of the next
block), the producer thresholds and packs them in the same pass (``out_threshold``), and drops its real-valued output
when nobody needs it (``keep_real``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bnncl.device import kernels as K
from bnncl.device.bitpack import unpack_signs, words_for

BACKENDS = ("packed", "float")


@dataclass
class Activation:
    """Real values (N, H, W, C) float32 and/or the signs the next conv consumes: packed (N, H, W, words) uint64 on
    the packed backend, ±1 float32 (N, H, W, C) on the float backend."""

    channels: int
    real: np.ndarray | None = None
    bits: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.real, self.bits) if a is not None)

    def signs(self) -> np.ndarray:
        """The binary part as ±1 float32 (N, H, W, C), whichever backend made it."""
        if self.bits is None:
            raise ValueError("this activation has no binary part")
        if self.bits.dtype == np.uint64:
            return unpack_signs(self.bits, self.channels)
        return self.bits


def _below(x: np.ndarray, threshold: np.ndarray, backend: str) -> np.ndarray:
    if backend == "packed":
        return K.pack_below(x, threshold)
    return np.where(x < threshold, np.float32(-1), np.float32(1))


class Op:
    name: str
    in_threshold: np.ndarray | None = None  # the threshold this op binarizes its input with (None: takes real input)
    needs_real_input: bool = True

    def __init__(self):
        self.out_threshold = None  # set by link(): the next op's in_threshold
        self.keep_real = True

    def run(self, act: Activation, backend: str) -> Activation:
        raise NotImplementedError

    def _output(self, channels: int, real: np.ndarray, backend: str) -> Activation:
        """The real output, kept only if the next op reads it, and its signs for the next op if that binarizes."""
        bits = _below(real, self.out_threshold, backend) if self.out_threshold is not None else None
        return Activation(channels, real if self.keep_real else None, bits)


class FoldedStem(Op):
    """Float conv (zero padding) with BN folded into its weights and bias."""

    def __init__(self, name, weight, bias, stride):
        super().__init__()
        self.name, self.weight, self.bias, self.stride = name, weight, bias, int(stride)
        self.cout = weight.shape[0]

    def run(self, act, backend):
        if backend == "packed":
            real = K.conv2d(act.real, self.weight, self.bias, self.stride, 1)
        else:
            real = K.conv2d_reference(act.real, self.weight, self.bias, self.stride, 1)
        return self._output(self.cout, real, backend)


class Binarize(Op):
    """``sign(x + shift)`` as the threshold ``x < -shift``; usually fused into the op before it."""

    needs_real_input = False

    def __init__(self, name, threshold):
        super().__init__()
        self.name, self.in_threshold = name, threshold

    def run(self, act, backend):
        bits = act.bits if act.bits is not None else _below(act.real, self.in_threshold, backend)
        return Activation(act.channels, None, bits)


class Block(Op):
    """shift + sign (the input threshold) -> binary 3x3 conv -> folded BN -> + shortcut -> RPReLU."""

    def __init__(self, name, arrays: dict, spec: dict):
        super().__init__()
        self.name = name
        self.cin, self.cout, self.stride = int(spec["cin"]), int(spec["cout"]), int(spec["stride"])
        self.binary_input = bool(spec["binary_input"])
        self.shortcut = spec["shortcut"]  # {"kind": identity | duplicate | binary, "stride": s}
        self.needs_real_input = not self.binary_input
        self.in_threshold = None if self.binary_input else arrays[f"{name}.threshold"]
        # packed in the kernels' layout (3, 3, words, Cout), as the file holds them (the C runtime reads them in place)
        self.weight_kernel = arrays[f"{name}.conv.weight"]
        words = words_for(self.cin)
        if self.weight_kernel.shape != (3, 3, words, self.cout) or self.weight_kernel.dtype != np.uint64:
            raise ValueError(f"{name}.conv.weight is {self.weight_kernel.dtype} {self.weight_kernel.shape}, not the "
                             f"packed (3, 3, {words}, {self.cout}) uint64 of a {self.cin} -> {self.cout} block")
        self.mult, self.bias = arrays[f"{name}.mult"], arrays[f"{name}.bias"]
        self.rprelu = tuple(arrays[f"{name}.rprelu.{k}"] for k in ("shift_in", "slope", "shift_out"))
        self.input_scale = arrays.get(f"{name}.input_scale")
        if self.shortcut["kind"] == "binary":
            sc = f"{name}.shortcut"
            self.sc_threshold, self.sc_weight_kernel = arrays[f"{sc}.threshold"], arrays[f"{sc}.weight"]
            if self.sc_weight_kernel.shape != (1, 1, words, self.cout) or self.sc_weight_kernel.dtype != np.uint64:
                raise ValueError(f"{sc}.weight is {self.sc_weight_kernel.dtype} {self.sc_weight_kernel.shape}, not "
                                 f"the packed (1, 1, {words}, {self.cout}) uint64")
            self.sc_mult, self.sc_bias = arrays[f"{sc}.mult"], arrays[f"{sc}.bias"]

    @cached_property
    def weight_float(self) -> np.ndarray:
        """The float backend's ±1 weights (Cout, 3, 3, Cin) float32, made on first use (the packed backend never)."""
        return unpack_signs(np.ascontiguousarray(self.weight_kernel.transpose(3, 0, 1, 2)), self.cin)

    @cached_property
    def sc_weight_float(self) -> np.ndarray:
        return unpack_signs(np.ascontiguousarray(self.sc_weight_kernel.transpose(3, 0, 1, 2)), self.cin)

    def weight_bytes(self, backend: str) -> int:
        """Bytes of the parameters this block holds to run on ``backend``."""
        vectors = [self.mult, self.bias, *self.rprelu, self.in_threshold, self.input_scale]
        if self.shortcut["kind"] == "binary":
            vectors += [self.sc_threshold, self.sc_mult, self.sc_bias]
        total = sum(v.nbytes for v in vectors if v is not None)
        binary_shortcut = self.shortcut["kind"] == "binary"
        if backend == "packed":
            return total + self.weight_kernel.nbytes + (self.sc_weight_kernel.nbytes if binary_shortcut else 0)
        return total + 4 * self.cout * 9 * self.cin + (4 * self.cout * self.cin if binary_shortcut else 0)

    def _conv(self, signs, backend, weight_kernel, weight_float, stride, pad):
        if backend == "packed":
            return K.bconv(signs, weight_kernel, self.cin, stride, pad, w_is_kernel_layout=True)
        return K.sign_conv_float(signs, weight_float, stride, pad)

    def _pool(self, x, backend):
        s = self.shortcut.get("stride", 1)
        if s == 1:
            return x
        return K.avgpool(x, s) if backend == "packed" else K.avgpool_reference(x, s)

    def _shortcut(self, act, backend):
        """The shortcut's value with Cin or Cout channels (the epilogue tiles Cin up to Cout)."""
        if self.binary_input:  # the input is ±1 only: the shortcut scales the signs per channel
            x = act.signs() * self.input_scale
        else:
            x = act.real
        kind = self.shortcut["kind"]
        if kind in ("identity", "duplicate"):
            return self._pool(x, backend)
        pooled = self._pool(x, backend)  # binary: pool -> threshold -> binary 1x1 conv -> folded BN
        dot = self._conv(_below(pooled, self.sc_threshold, backend), backend, self.sc_weight_kernel,
                         self.sc_weight_float if backend == "float" else None, 1, 0)
        return K.shortcut_affine(dot, self.sc_mult, self.sc_bias)

    def run(self, act, backend):
        if act.bits is None:
            raise ValueError(f"{self.name}: the previous op did not binarize its output for this block")
        dot = self._conv(act.bits, backend, self.weight_kernel, self.weight_float if backend == "float" else None,
                         self.stride, 1)
        shortcut = self._shortcut(act, backend)
        if backend == "packed":
            real, bits = K.block_epilogue(dot, self.mult, self.bias, shortcut, *self.rprelu,
                                          threshold=self.out_threshold, want_real=self.keep_real)
            return Activation(self.cout, real, bits)
        real, _ = K.block_epilogue_reference(dot, self.mult, self.bias, shortcut, *self.rprelu)
        return self._output(self.cout, real, backend)


class GlobalPool(Op):
    def __init__(self, name):
        super().__init__()
        self.name = name

    def run(self, act, backend):
        return Activation(act.channels, K.global_avgpool(act.real))


class Head(Op):
    """Bias-free float linear layer: logits = features @ W.T."""

    def __init__(self, name, weight):
        super().__init__()
        self.name, self.weight = name, np.ascontiguousarray(weight, np.float32)

    def run(self, act, backend):
        return Activation(self.weight.shape[0], act.real @ self.weight.T)


def link(ops: list[Op]) -> list[Op]:
    """Tell each op what its successor consumes: fuse the successor's input threshold into the producer, and drop
    real outputs that nobody reads. The last op keeps its real output (the logits)."""
    for op, nxt in zip(ops, ops[1:]):
        op.out_threshold = nxt.in_threshold
        op.keep_real = nxt.needs_real_input
    return ops


def build_op(layer: dict, arrays: dict) -> Op:
    kind, name = layer["kind"], layer["name"]
    if kind == "stem":
        return FoldedStem(name, arrays[f"{name}.weight"], arrays[f"{name}.bias"], layer["stride"])
    if kind == "block":
        return Block(name, arrays, layer)
    if kind == "binarize":
        return Binarize(name, arrays[f"{name}.threshold"])
    if kind == "pool":
        return GlobalPool(name)
    if kind == "head":
        return Head(name, arrays[f"{name}.weight"])
    raise ValueError(f"unknown layer kind {kind!r} in {name}")
