"""Quantized back-propagation through the trainable part above the latent-replay layer (work B, docs/method.md §5),
written out by hand in NumPy (no autograd): the blocks above the LR layer, the global pool and the bias-free head.

Forward at ``q_f`` bits: the input, weights and output of every trainable non-BN op (shift, binary conv, shortcut,
residual add, RPReLU's shifts and PReLU, pool, head), the softmax output on [0, 1] and the logit gradient.
Backward: every gradient at ``q_b`` bits, the binary convs' weight gradients at ``q_bin``. BatchNorm runs in float
with batch statistics and its parameters update without quantization. Updates are plain SGD, stored at ``q_b``
(``theta <- Q_qb(theta - lr g)``), the binary convs' latent weights re-binarized first as in work B's code
(``W <- clip(Q_qbin(sign(W) - lr g), -1, 1)``).

At 32 bits every quantizer is the identity, and the gradients equal torch autograd's on the same model in training
mode (tests/core/test_backprop.py) — binarizers included: ApproxSign (or the STE box) for activations, the STE box
for the magnitude-aware weight sign, whose scale ``mean|W|`` is a constant in the backward pass.

NumPy only: the on-device learner reuses the same forward and backward with integer operands. The two places the
number format enters are declared as Protocols: :class:`Quantizers` (the ``f``/``b``/``bin`` quantizers and the
product of two quantized operands: :class:`Bits` here, ``bnncl.device.integer_step.IntegerBits`` on the device) and
:class:`ConvBackend` (the binary conv's forward and backward: :class:`NumpyConv` here,
``bnncl.device.integer_step.IntegerConv`` on the device).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bnncl.core.affine import quantize
from bnncl.core.functional import F32, avgpool_reference, nll, onehot, sign, softmax


class Quantizers(Protocol):
    """The number formats of the learning step: forward values (``f``, q_f bits), gradients and stored parameters
    (``b``, q_b), the binary convs' latent weights and their gradients (``bin``, q_bin); ``where`` names the tensor
    in errors. ``matmul``: ``a @ b`` (``a.T``/``b.T`` with ``ta``/``tb``) of two of their outputs."""

    def f(self, x: np.ndarray, where: str) -> np.ndarray: ...
    def b(self, x: np.ndarray, where: str) -> np.ndarray: ...
    def bin(self, x: np.ndarray, where: str) -> np.ndarray: ...
    def matmul(self, a: np.ndarray, b: np.ndarray, ta: bool = False, tb: bool = False) -> np.ndarray: ...


class ConvBackend(Protocol):
    """The binary 3x3 conv with +1 padding on ±1 operands (N, C, H, W) and weights (Cout, Cin, 3, 3):
    ``forward`` returns the output and what ``backward`` needs; ``backward`` returns the gradients w.r.t. the ±1
    input and the effective weights."""

    def forward(self, xb: np.ndarray, wb: np.ndarray, stride: int) -> tuple[np.ndarray, object]: ...
    def backward(self, gc: np.ndarray, wb: np.ndarray, stride: int, saved) -> tuple[np.ndarray, np.ndarray]: ...


def im2col(x: np.ndarray, k: int, stride: int, pad: int, pad_value: float) -> tuple[np.ndarray, tuple]:
    """x (N, C, H, W) -> columns (N*Ho*Wo, C*k*k) in torch's weight order (C, kh, kw)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value) if pad else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,Ho,Wo,k,k
    ho, wo = win.shape[2], win.shape[3]
    cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * ho * wo, c * k * k)
    return cols, (n, c, h, w, ho, wo)


def col2im(gcols: np.ndarray, shape: tuple, k: int, stride: int, pad: int) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter-add column gradients back to the (unpadded) input; ``shape`` starts
    (N, C, H, W) (:func:`im2col`'s). The k*k taps are added in turn, row by row, into zeros of ``gcols``'s dtype:
    each output value sums its taps in that order (the device kernel ``bnncl.device.kernels.col2im``'s)."""
    n, c, h, w = shape[:4]
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    g = gcols.reshape(n, ho, wo, c, k, k)
    gp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), gcols.dtype)
    for dy in range(k):
        for dx in range(k):
            gp[:, :, dy:dy + stride * (ho - 1) + 1:stride,
               dx:dx + stride * (wo - 1) + 1:stride] += g[..., dy, dx].transpose(0, 3, 1, 2)
    return gp[:, :, pad:pad + h, pad:pad + w]


def avgpool2(x: np.ndarray, s: int) -> np.ndarray:
    """s x s average pool, ceil mode, averaging only the pixels inside the image (NCHW): the device's pooling."""
    return np.ascontiguousarray(avgpool_reference(x.transpose(0, 2, 3, 1), s).transpose(0, 3, 1, 2))


def avgpool2_backward(g: np.ndarray, shape: tuple, s: int) -> np.ndarray:
    n, c, h, w = shape
    gx = np.zeros(shape, g.dtype)
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            ys, xs = slice(i * s, min(h, (i + 1) * s)), slice(j * s, min(w, (j + 1) * s))
            count = (ys.stop - ys.start) * (xs.stop - xs.start)
            gx[:, :, ys, xs] += (g[:, :, i, j] / count)[:, :, None, None]
    return gx


def float_matmul(a: np.ndarray, b: np.ndarray, ta: bool = False, tb: bool = False) -> np.ndarray:
    """``a @ b`` (``a.T``/``b.T`` with ``ta``/``tb``) in float: :class:`Bits`' product."""
    return np.asarray(a.T if ta else a) @ np.asarray(b.T if tb else b)


class NumpyConv:
    """Binary conv with +1 padding in float (±1 operands), forward and backward, by im2col and matrix products (BLAS).
    ``scatter``: the scatter-add of the input gradient (:func:`col2im`; the device passes its kernel, held equal)."""

    def __init__(self, scatter=None):
        self.scatter = scatter or col2im

    def forward(self, xb: np.ndarray, wb: np.ndarray, stride: int):
        cols, shape = im2col(xb, 3, stride, 1, 1.0)
        cout = wb.shape[0]
        c = (cols @ wb.reshape(cout, -1).T).reshape(shape[0], shape[4], shape[5], cout).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(c), (cols, shape)

    def backward(self, gc: np.ndarray, wb: np.ndarray, stride: int, saved) -> tuple[np.ndarray, np.ndarray]:
        """(gradient w.r.t. the ±1 input, gradient w.r.t. the effective weights)."""
        cols, shape = saved
        cout = wb.shape[0]
        gc_flat = gc.transpose(0, 2, 3, 1).reshape(-1, cout)
        gwb = (gc_flat.T @ cols).reshape(wb.shape)
        gxb = self.scatter(gc_flat @ wb.reshape(cout, -1), shape, 3, stride, 1)
        return gxb, gwb


@dataclass
class Bits:
    q_f: int = 32
    q_b: int = 32
    q_bin: int = 32
    rounding: str = "nearest"
    rng: np.random.Generator | None = None
    grid: str = "affine"  # or "integer": the device's levels (bnncl.core.affine.quantize)

    def f(self, x, where):
        return quantize(x, self.q_f, rounding=self.rounding, rng=self.rng, where=where, grid=self.grid)

    def b(self, x, where):
        return quantize(x, self.q_b, rounding=self.rounding, rng=self.rng, where=where, grid=self.grid)

    def bin(self, x, where):
        return quantize(x, self.q_bin, rounding=self.rounding, rng=self.rng, where=where, grid=self.grid)

    matmul = staticmethod(float_matmul)


@dataclass
class BlockParams:
    """One residual block's trainable state (float32 NumPy), named as in the torch module's state dict."""

    name: str
    weight: np.ndarray  # latent conv weights (Cout, Cin, 3, 3)
    stride: int
    binary_input: bool
    shortcut: str  # identity | duplicate
    shift: np.ndarray | None  # (Cin,), None with binary_input
    input_scale: np.ndarray | None  # (Cin,), only with binary_input
    bn_weight: np.ndarray = None
    bn_bias: np.ndarray = None
    running_mean: np.ndarray = None
    running_var: np.ndarray = None
    shift_in: np.ndarray = None
    slope: np.ndarray = None
    shift_out: np.ndarray = None
    eps: float = 1e-5
    momentum: float = 0.1
    activation: str = "approx"
    grads: dict = field(default_factory=dict)


def surrogate(a: np.ndarray, activation: str) -> np.ndarray:
    if activation == "approx":
        return np.maximum(F32(0), F32(2) - F32(2) * np.abs(a))
    return (np.abs(a) <= 1).astype(F32)


class QuantizedBackprop:
    """Forward and backward of ``blocks`` -> global pool -> head, with the quantizers of :class:`Bits`."""

    def __init__(self, blocks: list[BlockParams], head: np.ndarray, bits: Bits, conv=None):
        self.blocks, self.head, self.bits = blocks, head, bits
        self.conv = conv or NumpyConv()  # the simulation passes torch's convolutions (same arithmetic, faster)
        self.head_grad = None

    # -- one block ---------------------------------------------------------------------------------------------------

    def _block_forward(self, p: BlockParams, x: np.ndarray, cache: list, train: bool,
                       update_stats: bool = True) -> np.ndarray:
        q = self.bits
        n = p.name
        if p.binary_input:
            a = x  # already ±1
        else:
            a = q.f(x + p.shift[None, :, None, None], f"{n}.shift output")
        xb = sign(a)
        alpha = np.abs(p.weight).mean(axis=(1, 2, 3), keepdims=True)
        wb = q.f(sign(p.weight) * alpha, f"{n}.conv weights")
        c, saved = self.conv.forward(xb, wb, p.stride)
        cout = p.weight.shape[0]
        c = q.f(c, f"{n}.conv output")
        # BatchNorm, float, batch statistics (biased variance to normalize, unbiased for the running estimate)
        if train:
            mu = c.mean(axis=(0, 2, 3))
            var = c.var(axis=(0, 2, 3))
            m = c.size // c.shape[1]
            if update_stats:
                p.running_mean[:] = (1 - p.momentum) * p.running_mean + p.momentum * mu
                p.running_var[:] = (1 - p.momentum) * p.running_var + p.momentum * var * m / max(m - 1, 1)
        else:
            mu, var = p.running_mean, p.running_var
        invstd = F32(1) / np.sqrt(var.astype(F32) + F32(p.eps))
        xhat = (c - mu[None, :, None, None]) * invstd[None, :, None, None]
        o = xhat * p.bn_weight[None, :, None, None] + p.bn_bias[None, :, None, None]
        s_in = x * p.input_scale[None, :, None, None] if p.binary_input else x
        sc = s_in
        if p.shortcut == "duplicate":
            if p.stride > 1:
                sc = avgpool2(sc, p.stride)
            reps = cout // x.shape[1]
            sc = np.tile(sc, (1, reps, 1, 1)) if reps > 1 else sc
        sc = q.f(sc, f"{n}.shortcut output")
        z = q.f(o + sc, f"{n}.residual add")
        u = q.f(z + p.shift_in[None, :, None, None], f"{n}.rprelu shift_in")
        v = q.f(np.where(u > 0, u, u * p.slope[None, :, None, None]), f"{n}.prelu output")
        r = q.f(v + p.shift_out[None, :, None, None], f"{n}.rprelu output")
        cache.append((a, saved, wb, xhat, invstd, u, x))
        return r

    def _block_backward(self, p: BlockParams, g: np.ndarray, cache) -> np.ndarray:
        q = self.bits
        n = p.name
        a, saved, wb, xhat, invstd, u, x = cache
        xshape = x.shape
        gr = {}
        gr["act.shift_out.bias"] = g.sum(axis=(0, 2, 3))
        gu = q.b(np.where(u > 0, g, g * p.slope[None, :, None, None]), f"{n}.prelu input gradient")
        gr["act.prelu.weight"] = np.where(u > 0, 0, g * u).sum(axis=(0, 2, 3))
        gr["act.shift_in.bias"] = gu.sum(axis=(0, 2, 3))
        gz = gu
        # BatchNorm backward with batch statistics
        m = gz.size // gz.shape[1]
        gr["bn.bias"] = gz.sum(axis=(0, 2, 3))
        gr["bn.weight"] = (gz * xhat).sum(axis=(0, 2, 3))
        gxhat = gz * p.bn_weight[None, :, None, None]
        gc = (invstd[None, :, None, None] / m) * (m * gxhat - gxhat.sum(axis=(0, 2, 3), keepdims=True)
                                                  - xhat * (gxhat * xhat).sum(axis=(0, 2, 3), keepdims=True))
        gc = q.b(gc.astype(F32), f"{n}.conv output gradient")
        cout = p.weight.shape[0]
        gxb, gwb = self.conv.backward(gc, wb, p.stride, saved)
        # magnitude-aware sign: STE box on the latent weight, the scale a constant
        gr["conv.weight"] = q.bin(gwb * (np.abs(p.weight) <= 1), f"{n}.conv weight gradient")
        # shortcut backward
        gsc = gz
        cin = xshape[1]
        if p.shortcut == "duplicate":
            reps = cout // cin
            if reps > 1:
                gsc = gsc.reshape(gsc.shape[0], reps, cin, *gsc.shape[2:]).sum(axis=1)
            if p.stride > 1:
                gsc = avgpool2_backward(gsc, xshape, p.stride)
        if p.binary_input:  # the input is the LR layer's ±1 tensor: no gradient below, but the scale learns
            gr["input_scale.scale"] = (gsc * x).sum(axis=(0, 2, 3))
            gx = None
        else:
            ga = gxb * surrogate(a, p.activation)
            gr["shift.bias"] = ga.sum(axis=(0, 2, 3))
            gx = q.b(ga + gsc, f"{n}.input gradient")
        for k, v in gr.items():
            if k != "conv.weight" and not k.startswith("bn."):
                gr[k] = q.b(v, f"{n}.{k} gradient")
        p.grads = gr
        return gx

    # -- the whole trainable part -------------------------------------------------------------------------------------

    def forward(self, x: np.ndarray, train: bool = True, update_stats: bool = True):
        cache = []
        h = np.asarray(x, F32)
        for p in self.blocks:
            h = self._block_forward(p, h, cache, train, update_stats)
        feat = self.bits.f(h.mean(axis=(2, 3)), "head input")
        wq = self.bits.f(self.head, "head weights")
        return self.bits.matmul(feat, wq, tb=True), (cache, feat, wq, h.shape)

    def loss_and_backward(self, x: np.ndarray, y: np.ndarray, update_stats: bool = True) -> float:
        """Forward in training mode, loss, and every gradient (``self.head_grad``, each block's ``grads``)."""
        q = self.bits
        logits, (cache, feat, wq, hshape) = self.forward(x, train=True, update_stats=update_stats)
        p = softmax(logits)
        nb = len(y)
        loss = nll(p, y)
        p = quantize(p, q.q_f, 0.0, 1.0, rounding=q.rounding, rng=q.rng, where="softmax output", grid=q.grid)
        d = q.f((p - onehot(y, p.shape[1], p.dtype)) / F32(nb), "logit gradient")
        self.head_grad = q.b(q.matmul(d, feat, ta=True), "head weight gradient")
        gfeat = q.b(q.matmul(d, wq), "head input gradient")
        g = np.broadcast_to((gfeat / F32(hshape[2] * hshape[3]))[:, :, None, None], hshape).astype(F32)
        for p_, c in zip(reversed(self.blocks), reversed(cache)):
            g = self._block_backward(p_, g, c)
        return loss

    def sgd_step(self, lr: float, rebinarize: bool = True) -> None:
        q = self.bits
        lr = F32(lr)
        self.head[:] = q.b(self.head - lr * self.head_grad, "head weights (stored)")
        for p in self.blocks:
            g = p.grads
            base = sign(p.weight) if rebinarize else p.weight
            p.weight[:] = np.clip(q.bin(base - lr * g["conv.weight"], f"{p.name}.conv latent weights"), -1, 1)
            p.bn_weight -= lr * g["bn.weight"]
            p.bn_bias -= lr * g["bn.bias"]
            for key, arr in (("shift.bias", p.shift), ("input_scale.scale", p.input_scale),
                             ("act.shift_in.bias", p.shift_in), ("act.prelu.weight", p.slope),
                             ("act.shift_out.bias", p.shift_out)):
                if key in g and arr is not None:
                    arr[:] = q.b(arr - lr * g[key], f"{p.name}.{key} (stored)")

