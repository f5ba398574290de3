"""Device kernels: XNOR-popcount GEMM and convolution on packed signs, the float stem convolution, pooling, the
fused threshold/sign packing, the block epilogue, and the integer products of the learning step.

Laid out as Larq Compute Engine lays out its kernels: each optimized kernel beside its reference, one contract, one
test suite over the registry.

* One module per family, each numba kernel beside its plain NumPy reference (``*_reference``): :mod:`.binary`
  (``bgemm``, ``bconv``, ``pack_below``, the ``popcount64`` intrinsic), :mod:`.floating` (``conv2d``, ``avgpool``;
  the NumPy-only ``sign_conv_float`` and ``global_avgpool``), :mod:`.epilogue` (``block_epilogue``) and
  :mod:`.integer` (``imatmul``, ``col2im``). :mod:`._common` holds the helpers two families share.
* One contract, :mod:`.registry`: ``KERNELS`` registers every optimized kernel beside its reference, and the two
  return the same result bit for bit for the same arguments, on every CPU.
* One test suite over the registry (``tests/device/kernels/test_registry.py``) holds every entry to that contract
  and every optimized public kernel to being registered; the family tests (``tests/device/kernels/test_<family>.py``)
  hold kernels and references against float64 oracles, edge cases and refusals.

Every public name is re-exported here: ``from bnncl.device.kernels import bconv`` and ``kernels.bconv`` work.

Layout: activations are NHWC, float32 when real-valued and packed along channels (``bitpack``) when binary.

For K binary inputs packed in words, ``dot(a, w) = K - 2 * popcount(a xor w)``: the xor counts disagreements.
numba has no popcount function, so :func:`popcount64` is an intrinsic that emits LLVM's ``ctpop``. numba compiles
for the host CPU: the inner loops run over output channels (weights stored ``(kh, kw, words, Cout)``), so LLVM
vectorizes ``acc[co] += ctpop(x ^ w[co])``; with AVX-512 VPOPCNTDQ that is one ``vpopcntq`` per 8 words, without it
LLVM emits scalar ``popcnt`` (or a shuffle-based bit count on AVX2), which is several times slower per word.

Kernels are compiled once and cached on disk (``cache=True``, in ``__pycache__`` beside the family's module), so a
second process starts without compiling. numba checks a cached kernel against its own file only: after changing a
numba helper that another file calls (``_common``'s ``_tap`` and ``_nine``, ``binary``'s ``popcount64`` and
``_pack_row``), touch the files that call it (or clear their ``__pycache__``), or the old compiled code is loaded.
"""

from __future__ import annotations

from bnncl.device.kernels.binary import _bconv3x3 as _bconv3x3  # benchmarks/inference.py inspects its machine code
from bnncl.device.kernels.binary import (
    bconv,
    bconv_reference,
    bgemm,
    bgemm_reference,
    conv_weights_for_kernel,
    pack_below,
    pack_below_reference,
    popcount64,
)
from bnncl.device.kernels.epilogue import block_epilogue, block_epilogue_reference, shortcut_affine
from bnncl.device.kernels.floating import (
    avgpool,
    conv2d,
    conv2d_reference,
    global_avgpool,
    sign_conv_float,
)
from bnncl.device.kernels.integer import PARALLEL_MIN_WORK, col2im, imatmul, imatmul_reference
from bnncl.device.kernels.registry import KERNELS, UNREGISTERED, Kernel, avgpool_reference, col2im_reference

__all__ = [
    "KERNELS", "PARALLEL_MIN_WORK", "UNREGISTERED", "Kernel", "avgpool", "avgpool_reference", "bconv",
    "bconv_reference", "bgemm", "bgemm_reference", "block_epilogue", "block_epilogue_reference", "col2im",
    "col2im_reference", "conv2d", "conv2d_reference", "conv_weights_for_kernel", "global_avgpool", "imatmul",
    "imatmul_reference", "pack_below", "pack_below_reference", "popcount64", "shortcut_affine", "sign_conv_float",
]
