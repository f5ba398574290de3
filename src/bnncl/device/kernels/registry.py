"""The kernels' contract: every optimized kernel registered beside its NumPy reference.

The optimized inference kernels (the binary, floating and epilogue families) are the C runtime's
(``runtime/include/bnn_kernels.h``), called through ctypes; the integer family's (the learning step's) are numba's.
For the same arguments, ``optimized(*args)`` and ``reference(*args)`` return the same values bit for bit (an array,
or a tuple of arrays and ``None``), on every CPU: the integer kernels are exact, and the float kernels run their
reference's fixed order of float32 operations (no fast-math, no fused multiply-add), so their results depend neither
on the CPU's vector width nor on how many images are in the call or how a call is split over threads.
``tests/device/kernels/test_registry.py`` holds every entry to this on random inputs and checks that every public
function of the families is either registered here or listed in :data:`UNREGISTERED` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bnncl.core.backprop import col2im as col2im_reference
from bnncl.core.functional import avgpool_reference
from bnncl.device.kernels import binary, epilogue, floating, integer


@dataclass(frozen=True)
class Kernel:
    """One optimized kernel (a ctypes wrapper of the C runtime's kernel, or numba's for the integer family) and its
    reference: the same arguments, the same result bit for bit."""

    name: str  # the optimized function's name, the key in KERNELS
    family: str  # the module of bnncl.device.kernels the optimized kernel lives in
    reference: Callable  # plain NumPy, the order of operations written out (the core's own where it has one)
    optimized: Callable  # the C runtime's kernel through ctypes (the integer family: numba)
    doc: str  # what it computes, and anything the bit-for-bit contract allows beyond equal values


KERNELS: dict[str, Kernel] = {k.name: k for k in (
    Kernel("bgemm", "binary", binary.bgemm_reference, binary.bgemm,
           "binary GEMM: packed (M, words) and (N, words) signs, k real inputs -> (M, N) int32 dot products"),
    Kernel("bconv", "binary", binary.bconv_reference, binary.bconv,
           "binary conv of packed NHWC signs with packed (Cout, kh, kw, words) weights, +1 padding -> int32 dot "
           "products; the optimized kernel runs 3x3 with padding 1 and 1x1 without (the backbones' convs) only"),
    Kernel("pack_below", "binary", binary.pack_below_reference, binary.pack_below,
           "the bits of x < threshold per channel, packed like bitpack.pack_signs (unused tail bits 0)"),
    Kernel("conv2d", "floating", floating.conv2d_reference, floating.conv2d,
           "float conv (the stem), zero padding, in one fixed order of float32 operations"),
    Kernel("avgpool", "floating", avgpool_reference, floating.avgpool,
           "s x s average pooling, ceil mode, over the pixels inside the image, in one fixed float32 order"),
    Kernel("block_epilogue", "epilogue", epilogue.block_epilogue_reference, epilogue.block_epilogue,
           "folded BN + shortcut + RPReLU -> (real or None, bits below the next threshold or None)"),
    Kernel("imatmul", "integer", integer.imatmul_reference, integer.imatmul,
           "exact integer matrix product; the same values, in int32 when the sums fit (the reference: int64)"),
    Kernel("col2im", "integer", col2im_reference, integer.col2im,
           "scatter-add of column gradients back to (N, C, H, W), the taps in order, in the columns' dtype"),
)}

# Public functions of the families that are not optimized kernels, and why they have no entry.
UNREGISTERED: dict[str, str] = {
    "conv_weights_for_kernel": "a layout transform of the weights, done once at export (bconv is tested with both)",
    "sign_conv_float": "NumPy and BLAS only, no optimized form; exact integers, tested equal to bconv",
    "global_avgpool": "NumPy only, its fixed order written out; no optimized form",
    "shortcut_affine": "NumPy only (an elementwise float32 product and sum): its own reference",
}
