"""Test vectors for the C kernels and the random generator (runtime/tests/test_kernels.c), written by the NumPy
references (and bnncl.core.rng).

Run with the project's venv: ``/work/main/.venv/bin/python runtime/tests/make_vectors.py OUT_DIR`` (the Makefile
does). Random inputs (seeded: the same files on every run) for many shapes -- odd channel counts (5, 33, 70, 130,
300) beside 64 and 128, odd and even H and W, strides 1 and 2, batch 1 and 3 -- go through the references in
``bnncl.device.kernels`` and ``bnncl.core.functional``; inputs and expected outputs are written to OUT_DIR.

``--corrupt SRC DST`` instead copies the vectors in SRC to DST and flips one bit of one expected output (the first
case of the first kernel), so a test run on DST must fail: the negative test of the harness.

File format (all little-endian):

* ``OUT_DIR/MANIFEST``: one case file name per line, ASCII.
* A case file (``<kernel>_<nnn>.bin``), one call of one kernel:

  ====================  ==========================================================================================
  ``magic``             8 bytes, ``BNNVEC1\\0``
  ``kernel``            32 bytes, the kernel's name, ASCII, NUL-padded (``bconv3x3``, ``pack_below``, ...)
  ``count``             uint32, the number of arrays that follow
  per array:
  ``name``              32 bytes, ASCII, NUL-padded. ``in.*`` inputs, ``out.*`` expected outputs, scalars by name
  ``dtype``             uint32: 1 uint64, 2 int32, 3 float32, 4 float64
  ``ndim``              uint32 (0 for a scalar, which holds one element)
  ``dims``              ndim x uint32
  ``data``              prod(dims) elements, C order
  ====================  ==========================================================================================

Layouts are the C kernels' (``runtime/include/bnn_kernels.h``): binary conv weights in the numba kernel's
(kh, kw, words, cout) layout (``conv_weights_for_kernel``), float conv weights (kh, kw, cin, cout), bgemm's weights
transposed to (words, n). The head's expected value is the float64 product with the sum of the terms' magnitudes
(``out.exact``, ``out.abs``): the test bounds the C result by gamma_F times the latter.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

from bnncl.core.functional import avgpool_reference
from bnncl.core.rng import Pcg32
from bnncl.device.bitpack import pack_signs, unpack_signs
from bnncl.device.kernels import (
    bconv_reference,
    bgemm_reference,
    block_epilogue_reference,
    conv2d_reference,
    conv_weights_for_kernel,
    global_avgpool,
    pack_below_reference,
    shortcut_affine,
)

MAGIC = b"BNNVEC1\0"
DTYPES = {np.dtype(np.uint64): 1, np.dtype(np.int32): 2, np.dtype(np.float32): 3, np.dtype(np.float64): 4}
NAME_BYTES = 32


def _name(s: str) -> bytes:
    b = s.encode("ascii")
    assert len(b) < NAME_BYTES, s
    return b.ljust(NAME_BYTES, b"\0")


def write_case(path: Path, kernel: str, arrays: dict) -> None:
    parts = [MAGIC, _name(kernel), struct.pack("<I", len(arrays))]
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.dtype == np.int64:  # scalars given as Python ints
            a = a.astype(np.int32)
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        parts += [_name(name), struct.pack("<II", DTYPES[np.dtype(a.dtype.type)], a.ndim),
                  struct.pack(f"<{a.ndim}I", *a.shape), a.tobytes()]
    path.write_bytes(b"".join(parts))


class Writer:
    def __init__(self, out: Path):
        self.out, self.names, self.count = out, [], {}

    def add(self, kernel: str, **arrays) -> None:
        n = self.count.get(kernel, 0)
        self.count[kernel] = n + 1
        name = f"{kernel}_{n:03d}.bin"
        write_case(self.out / name, kernel, arrays)
        self.names.append(name)

    def finish(self) -> None:
        (self.out / "MANIFEST").write_text("".join(f"{n}\n" for n in self.names))


# -- random inputs ---------------------------------------------------------------------------------------------------

def random_signs(rng, shape) -> np.ndarray:
    """Packed random signs of (..., C): tail bits 0, as every packed tensor."""
    return pack_signs(np.where(rng.random(shape) < 0.5, -1.0, 1.0))


def f32(rng, shape, scale=1.0, shift=0.0) -> np.ndarray:
    return (shift + scale * rng.standard_normal(shape)).astype(np.float32)


def rough_f32(rng, shape) -> np.ndarray:
    """float32 values of mixed magnitudes (rounding matters in every sum) with exact zeros and negative zeros."""
    v = rng.standard_normal(shape) * np.exp2(rng.integers(-6, 7, shape))
    v[rng.random(shape) < 0.03] = 0.0
    v[rng.random(shape) < 0.03] = -0.0
    return v.astype(np.float32)


# -- the kernels' cases ----------------------------------------------------------------------------------------------

CHANNELS = (5, 33, 64, 70, 128, 130)
SIZES = ((1, 1), (2, 3), (5, 5), (7, 7), (8, 6), (6, 9), (14, 14))


def pack_below_cases(w: Writer, rng) -> None:
    for i, c in enumerate(CHANNELS + (1, 300, 16, 32, 256)):  # 16, 32, 256: the SIMD forms' unrolled cases
        n, (h, wd) = 1 + 2 * (i % 2), SIZES[i % len(SIZES)]
        x = rough_f32(rng, (n, h, wd, c))
        thr = f32(rng, c, 0.5)
        thr[::3] = x[0, 0, 0, ::3]  # exact ties: x == threshold is not below
        thr[1::7] = -0.0  # -0.0 < +0.0 is false, as sign(0) = +1
        x.reshape(-1)[::11] = np.nan  # NaN is never below
        w.add("pack_below", **{"in.x": x, "in.threshold": thr, "out.bits": pack_below_reference(x, thr)})


def bconv3x3_cases(w: Writer, rng) -> None:
    couts = (5, 33, 64, 128, 16, 20, 8)
    shapes = [(cin, s, i) for i, (cin, s) in enumerate((c, s) for c in CHANNELS + (300,) for s in (1, 2))]
    cases = [(1 + 2 * (i % 2), *SIZES[i % len(SIZES)], cin, couts[i % len(couts)], s) for cin, s, i in shapes]
    cases += [(1, 7, 7, 128, 128, 1), (1, 14, 14, 64, 128, 2), (2, 4, 4, 512, 36, 1), (3, 9, 8, 1, 3, 2)]
    cases += [(1, 28, 28, 32, 32, 2), (2, 14, 14, 32, 32, 1), (1, 14, 14, 32, 64, 2), (3, 5, 7, 17, 9, 1),
              (1, 1, 1, 32, 8, 1), (2, 2, 3, 31, 40, 2)]  # the demo's 32-channel blocks, and more at most 32
    for n, h, wd, cin, cout, stride in cases:
        x = random_signs(rng, (n, h, wd, cin))
        wt = random_signs(rng, (cout, 3, 3, cin))
        dot = bconv_reference(x, wt, cin, stride, 1)
        arrays = {"in.x": x, "in.w": conv_weights_for_kernel(wt), "cin": cin, "stride": stride, "out.dot": dot}
        w.add("bconv3x3", **arrays)
        if cin <= 32:  # the same case through bnn_bconv3x3_paired (its weights paired by bnn_pair_taps3x3)
            w.add("bconv3x3_paired", **arrays)


def bconv1x1_cases(w: Writer, rng) -> None:
    cases = [(1, 7, 7, 64, 128, 1), (1, 14, 14, 64, 128, 2), (3, 5, 6, 5, 33, 2), (2, 7, 7, 70, 20, 1),
             (1, 8, 6, 130, 64, 2), (2, 3, 3, 33, 9, 1), (1, 4, 4, 300, 40, 2), (1, 1, 1, 128, 5, 2)]
    for n, h, wd, cin, cout, stride in cases:
        x = random_signs(rng, (n, h, wd, cin))
        wt = random_signs(rng, (cout, 1, 1, cin))
        dot = bconv_reference(x, wt, cin, stride, 0)
        w.add("bconv1x1", **{"in.x": x, "in.w": conv_weights_for_kernel(wt), "cin": cin, "stride": stride,
                             "out.dot": dot})


def bgemm_cases(w: Writer, rng) -> None:
    for m, n, k in ((1, 10, 5), (7, 33, 130), (16, 64, 128), (5, 20, 300), (3, 128, 64)):
        a, b = random_signs(rng, (m, k)), random_signs(rng, (n, k))
        w.add("bgemm", **{"in.a": a, "in.wt": np.ascontiguousarray(b.T), "k": k,
                          "out.dot": bgemm_reference(a, b, k)})


def conv2d_cases(w: Writer, rng) -> None:
    # (n, h, w, cin, cout, kh, kw, stride, pad, bias)
    cases = [(1, 28, 28, 1, 32, 3, 3, 1, 1, True), (3, 7, 6, 3, 33, 3, 3, 2, 1, True),
             (2, 9, 9, 5, 5, 3, 3, 1, 1, True), (1, 8, 8, 3, 64, 3, 3, 2, 1, True), (2, 5, 4, 3, 7, 3, 3, 1, 1, False),
             (1, 6, 7, 2, 6, 5, 5, 1, 2, True), (2, 5, 5, 3, 4, 1, 1, 1, 0, True), (1, 7, 8, 3, 5, 3, 2, 2, 0, True),
             (1, 1, 1, 3, 8, 3, 3, 1, 1, True), (2, 32, 32, 3, 64, 3, 3, 1, 1, True), (1, 6, 5, 2, 4, 3, 3, 1, 1, True)]
    for n, h, wd, cin, cout, kh, kw, stride, pad, with_bias in cases:
        x = rough_f32(rng, (n, h, wd, cin))
        wt = rough_f32(rng, (cout, kh, kw, cin))
        bias = f32(rng, cout) if with_bias else None
        if (kh, kw) != (3, 3) or cin in (2, 5):  # sparse input, -0.0 biases: where a sum starts shows in its sign
            x[rng.random(x.shape) < (0.9 if cin == 2 else 0.6)] = 0.0
            if cin == 2:  # all products of a zero input -0.0
                wt = -np.abs(wt)
            if with_bias:
                bias[::2] = -0.0
        out = conv2d_reference(x, wt, bias, stride, pad)
        arrays = {"in.x": x, "in.w": np.ascontiguousarray(np.transpose(wt, (1, 2, 3, 0))), "stride": stride,
                  "pad": pad, "out.y": out}
        if with_bias:
            arrays["in.bias"] = bias
        w.add("conv2d", **arrays)


def avgpool_cases(w: Writer, rng) -> None:
    for i, c in enumerate(CHANNELS):
        for s in (2, 3):
            n, (h, wd) = 1 + 2 * ((i + s) % 2), SIZES[(i + s) % len(SIZES)]
            x = rough_f32(rng, (n, h, wd, c))
            w.add("avgpool", **{"in.x": x, "s": s, "out.y": avgpool_reference(x, s)})


def global_avgpool_cases(w: Writer, rng) -> None:
    for i, c in enumerate(CHANNELS + (512,)):
        n, (h, wd) = 1 + 2 * (i % 2), SIZES[i % len(SIZES)]
        x = rough_f32(rng, (n, h, wd, c))
        w.add("global_avgpool", **{"in.x": x, "out.y": global_avgpool(x)})
    for shape in ((2, 1, 1, 7), (1, 2, 2, 70)):  # channels of -0.0 only: the sum starts at pixel 0, not at 0.0
        x = rough_f32(rng, shape)
        x[..., ::2] = -0.0
        w.add("global_avgpool", **{"in.x": x, "out.y": global_avgpool(x)})


def epilogue_cases(w: Writer, rng) -> None:
    for i, c in enumerate(CHANNELS):
        for variant in range(4):  # real and bits, real only, bits only, duplicate shortcut with bits
            n, (h, wd) = 1 + 2 * (variant % 2), SIZES[(i + variant) % len(SIZES)]
            cs = c if variant < 3 else next(d for d in (c // 2, c // 5, 1) if d and c % d == 0)
            k = 9 * c
            dot = rng.integers(-k, k + 1, (n, h, wd, c)).astype(np.int32)
            mult = np.abs(f32(rng, c, 0.02, 0.05))
            bias, sc = f32(rng, c, 0.3), rough_f32(rng, (n, h, wd, cs))
            shift_in, slope, shift_out = f32(rng, c, 0.2), f32(rng, c, 0.1, 0.25), f32(rng, c, 0.2)
            want_real, with_bits = variant != 2, variant != 1
            thr = f32(rng, c, 0.5) if with_bits else None
            if with_bits:  # exact ties with the first pixel's outputs
                z, _ = block_epilogue_reference(dot, mult, bias, sc, shift_in, slope, shift_out)
                thr[::4] = z[0, 0, 0, ::4]
            real, bits = block_epilogue_reference(dot, mult, bias, sc, shift_in, slope, shift_out, thr, want_real)
            arrays = {"in.dot": dot, "in.mult": mult, "in.bias": bias, "in.shortcut": sc, "in.shift_in": shift_in,
                      "in.slope": slope, "in.shift_out": shift_out}
            if with_bits:
                arrays["in.threshold"], arrays["out.bits"] = thr, bits
            if want_real:
                arrays["out.real"] = real
            w.add("block_epilogue", **arrays)


def shortcut_affine_cases(w: Writer, rng) -> None:
    for i, c in enumerate(CHANNELS):
        n, (h, wd) = 1 + 2 * (i % 2), SIZES[(i + 3) % len(SIZES)]
        dot = rng.integers(-c, c + 1, (n, h, wd, c)).astype(np.int32)
        mult, bias = np.abs(f32(rng, c, 0.02, 0.05)), f32(rng, c, 0.3)
        out = shortcut_affine(dot, mult, bias)  # bnncl.device.ops.Block._shortcut (the binary shortcut)
        assert out.dtype == np.float32
        w.add("shortcut_affine", **{"in.dot": dot, "in.mult": mult, "in.bias": bias, "out.y": out})


def unpack_scaled_cases(w: Writer, rng) -> None:
    for i, c in enumerate(CHANNELS):
        n, (h, wd) = 1 + 2 * (i % 2), SIZES[(i + 1) % len(SIZES)]
        bits, scale = random_signs(rng, (n, h, wd, c)), np.abs(f32(rng, c, 0.3, 0.8))
        out = unpack_signs(bits, c) * scale  # bnncl.device.ops.Block._shortcut, a block with binary input
        w.add("unpack_scaled", **{"in.bits": bits, "in.scale": scale, "out.y": out.astype(np.float32)})


def head_cases(w: Writer, rng) -> None:
    for n, f, classes in ((1, 128, 10), (3, 512, 10), (2, 5, 3), (4, 130, 7), (1, 2048, 50)):
        x, wt = rough_f32(rng, (n, f)), rough_f32(rng, (classes, f))
        x64, w64 = x.astype(np.float64), wt.astype(np.float64)
        w.add("head", **{"in.x": x, "in.w": wt, "out.exact": x64 @ w64.T, "out.abs": np.abs(x64) @ np.abs(w64).T})


def rng_cases(w: Writer, rng) -> None:
    """bnncl.core.rng.Pcg32's draws (bnn_rng.h): each output from a fresh generator of the case's seed."""
    bounds = np.array([1, 2, 3, 6, 10, 1000, 6000, 2 ** 31 + 1, 2 ** 31 + 3, 2 ** 32 - 1, 2 ** 32] * 40, np.uint64)
    for initstate, initseq in ((42, 54), (3, 0), (3 + 7919, 7919), (2 ** 64 - 1, 2 ** 63 + 5)):
        def fresh():
            return Pcg32(initstate, initseq)
        seed = np.array([initstate, initseq], np.uint64)
        n, k = 1500, 128
        w.add("rng_u32", **{"in.seed": seed, "out.u32": fresh().u32(1000).astype(np.uint64)})
        w.add("rng_below", **{"in.seed": seed, "in.bounds": bounds,
                              "out.below": fresh().belows(bounds).astype(np.uint64)})
        w.add("rng_permutation", **{"in.seed": seed, "n": n, "out.a": fresh().permutation(n).astype(np.uint64)})
        # the step's draw (128 of 1,500 slots), all of n, all but one, a memory update's (1,500 of 6,000 images)
        for cn, ck in ((n, k), (40, 40), (1000, 999), (6000, 1500)):
            w.add("rng_choice", **{"in.seed": seed, "n": cn, "k": ck,
                                   "out.a": fresh().choice(cn, ck).astype(np.uint64)})
        w.add("rng_float32", **{"in.seed": seed, "out.x": fresh().random(500, np.float32)})
        w.add("rng_float64", **{"in.seed": seed, "out.x": fresh().random(500)})


def write_all(out: Path) -> Writer:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bin"):
        old.unlink()
    w = Writer(out)
    rng = np.random.default_rng(20240601)
    for cases in (pack_below_cases, bconv3x3_cases, bconv1x1_cases, bgemm_cases, conv2d_cases, avgpool_cases,
                  global_avgpool_cases, epilogue_cases, shortcut_affine_cases, unpack_scaled_cases, head_cases,
                  rng_cases):
        cases(w, rng)
    w.finish()
    return w


def corrupt(src: Path, dst: Path) -> str:
    """Copy the vectors and flip one bit of the last byte of the first case's file: the first case is pack_below's,
    whose last array is its expected out.bits (the flipped bit is a channel bit or a tail bit, both checked)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    first = (dst / "MANIFEST").read_text().split()[0]
    data = bytearray((dst / first).read_bytes())
    data[-1] ^= 1
    (dst / first).write_bytes(bytes(data))
    return first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="directory to write the vectors to")
    ap.add_argument("--corrupt", type=Path, metavar="SRC",
                    help="copy SRC's vectors to OUT with one expected bit flipped")
    args = ap.parse_args(argv)
    if args.corrupt:
        print(f"corrupted {corrupt(args.corrupt, args.out)} in {args.out}")
        return 0
    w = write_all(args.out)
    print(f"{len(w.names)} cases in {args.out}: " + ", ".join(f"{k} {v}" for k, v in w.count.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
