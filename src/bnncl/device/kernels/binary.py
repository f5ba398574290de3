"""Binary kernels on packed signs: XNOR-popcount GEMM (:func:`bgemm`) and convolution (:func:`bconv`), and the fused
threshold/sign packing (:func:`pack_below`), each the C runtime's kernel (:mod:`._native`) beside its NumPy
reference."""

from __future__ import annotations

import numpy as np

from bnncl.device.bitpack import WORD_BITS, pack_signs, words_for
from bnncl.device.kernels import _native

# -- binary GEMM ---------------------------------------------------------------------------------------------------

def bgemm_reference(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """a: (M, words) packed, w: (N, words) packed, k real inputs per row -> (M, N) int32 dot products."""
    pop = np.bitwise_count(a[:, None, :] ^ w[None, :, :]).sum(axis=-1, dtype=np.int64)
    return (k - 2 * pop).astype(np.int32)


def bgemm(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Binary GEMM: ``a`` (M, words) and ``w`` (N, words) packed signs, ``k`` real inputs -> (M, N) int32 (C:
    bnn_bgemm, the rows of ``a`` split over the threads)."""
    if a.dtype != np.uint64 or w.dtype != np.uint64 or a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError("bgemm needs 2-D uint64 operands with the same word count, "
                         f"got {a.dtype}{a.shape} and {w.dtype}{w.shape}")
    if not 0 < k <= a.shape[1] * WORD_BITS:
        raise ValueError(f"k = {k} does not fit {a.shape[1]} words")
    (m, nw), n = a.shape, w.shape[0]
    out = np.empty((m, n), np.int32)
    if out.size == 0:
        return out
    a, wt = np.ascontiguousarray(a), np.ascontiguousarray(w.T)  # wt (words, N): the C kernel's layout
    kernel, wt_at = _native.lib().bnn_bgemm, _native.at(wt)
    _native.split("bgemm", m, m * n * nw,
                  lambda i, j: kernel(_native.at(a, i), j - i, nw, wt_at, n, int(k), _native.at(out, i)))
    return out


# -- binary convolution (NHWC, +1 padding) -------------------------------------------------------------------------

def bconv_reference(x: np.ndarray, w: np.ndarray, cin: int, stride: int, pad: int) -> np.ndarray:
    """x: (N, H, W, words) packed input; w: (Cout, kh, kw, words) packed weights; ``cin`` real input channels.

    Padding pixels are +1 (a zero word). Returns (N, Ho, Wo, Cout) int32 dot products.
    """
    n, h, wd, nw = x.shape
    cout, kh, kw, _ = w.shape
    xp = np.zeros((n, h + 2 * pad, wd + 2 * pad, nw), np.uint64)
    xp[:, pad:pad + h, pad:pad + wd] = x
    ho, wo = _native.out_size(h, kh, stride, pad), _native.out_size(wd, kw, stride, pad)
    out = np.zeros((n, ho, wo, cout), np.int64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[:, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]  # (n, ho, wo, nw)
            xor = patch[..., None, :] ^ w[None, None, None, :, dy, dx, :]
            out += np.bitwise_count(xor).sum(axis=-1, dtype=np.int64)
    return (kh * kw * cin - 2 * out).astype(np.int32)


def conv_weights_for_kernel(w: np.ndarray) -> np.ndarray:
    """Packed weights (Cout, kh, kw, words) -> the kernel's layout (kh, kw, words, Cout), the model file's. Do it
    once (at export, or when the learner rebuilds a block)."""
    return np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)))


def bconv(x: np.ndarray, w: np.ndarray, cin: int, stride: int = 1, pad: int = 1, *,
          w_is_kernel_layout: bool = False) -> np.ndarray:
    """Binary conv of packed ``x`` (N, H, W, words) with packed ``w`` (Cout, kh, kw, words): int32 dot products.

    The two convs of the backbones, in C: 3x3 with padding 1 (bnn_bconv3x3) and 1x1 without padding (bnn_bconv1x1,
    the binary shortcut's), any stride; other kernel sizes and paddings are refused (:func:`bconv_reference` computes
    them). The images are split over the threads.
    ``w_is_kernel_layout``: ``w`` is already :func:`conv_weights_for_kernel`'s (kh, kw, words, Cout).
    """
    wt = w if w_is_kernel_layout else conv_weights_for_kernel(w)
    if x.dtype != np.uint64 or wt.dtype != np.uint64 or x.ndim != 4 or wt.ndim != 4 or x.shape[-1] != wt.shape[2]:
        raise ValueError("bconv needs uint64 operands with the same word count, "
                         f"got {x.dtype}{x.shape} and {w.dtype}{w.shape}")
    n, h, wd, nw = x.shape
    kh, kw, _, cout = wt.shape
    if cin < 1 or words_for(cin) != nw:
        raise ValueError(f"bconv: {cin} input channels are not held by {nw} words")
    if (kh, kw, pad) not in ((3, 3, 1), (1, 1, 0)):
        raise ValueError(f"bconv runs 3x3 convs with padding 1 and 1x1 convs without padding, not {kh}x{kw} with "
                         f"padding {pad}")
    if stride < 1:
        raise ValueError(f"bconv: stride {stride} is not a positive whole number")
    cin, stride = int(cin), int(stride)
    ho, wo = _native.out_size(h, kh, stride, pad), _native.out_size(wd, kw, stride, pad)
    out = np.empty((n, ho, wo, cout), np.int32)
    if out.size == 0:
        return out
    x, wt = np.ascontiguousarray(x), np.ascontiguousarray(wt)
    lib, w_at = _native.lib(), _native.at(wt)

    def run(a: int, b: int) -> None:
        dims = _native.Dims(b - a, h, wd, cin)
        if kh == 3:
            scratch = _native.scratch(_native.BNN_COLUMNS * 9 * nw)  # the calling thread's
            lib.bnn_bconv3x3(_native.at(x, a), dims, w_at, cout, stride, scratch, _native.at(out, a))
        else:
            lib.bnn_bconv1x1(_native.at(x, a), dims, w_at, cout, stride, _native.at(out, a))

    _native.split(f"bconv{kh}x{kw}", n, out.size * kh * kw * nw, run)
    return out


# -- fused threshold + sign + pack ----------------------------------------------------------------------------------

def pack_below_reference(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Bits of ``x < threshold`` (per channel, last axis) packed like :func:`bitpack.pack_signs`.

    ``x < -b`` is exactly ``x + b < 0`` in IEEE arithmetic, so this is the sign of a shifted activation.
    """
    return pack_signs(np.where(x < threshold, -1.0, 1.0))


def pack_below(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) float32, threshold (C,) -> (N, H, W, words) uint64: bit set where ``x < threshold`` (C:
    bnn_pack_below, the pixels split over the threads). Any number of leading axes."""
    x = np.ascontiguousarray(x, dtype=np.float32)  # at least 1-D
    c = x.shape[-1]
    threshold = np.ascontiguousarray(threshold, dtype=np.float32)
    if threshold.shape != (c,):
        raise ValueError(f"pack_below: threshold has shape {threshold.shape}, expected ({c},)")
    out = np.empty((*x.shape[:-1], words_for(c)), np.uint64)
    if out.size == 0:
        return out
    pixels = x.size // c
    kernel, t_at = _native.lib().bnn_pack_below, _native.at(threshold)
    _native.split("pack_below", pixels, x.size,
                  lambda a, b: kernel(_native.at(x, a, pixels), b - a, c, t_at, _native.at(out, a, pixels)))
    return out
