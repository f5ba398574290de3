"""Device kernels: XNOR-popcount GEMM and convolution on packed signs, the float stem convolution, pooling, the
fused threshold/sign packing, the block epilogue, and the integer products of the learning step.

Laid out as Larq Compute Engine lays out its kernels: each optimized kernel beside its reference, one contract, one
test suite over the registry.

* One module per family, each optimized kernel beside its plain NumPy reference (``*_reference``): :mod:`.binary`
  (``bgemm``, ``bconv``, ``pack_below``), :mod:`.floating` (``conv2d``, ``avgpool``; the NumPy-only
  ``sign_conv_float`` and ``global_avgpool``), :mod:`.epilogue` (``block_epilogue``; the NumPy-only
  ``shortcut_affine``) and :mod:`.integer` (``imatmul``, ``col2im``).
* The optimized inference kernels are the C runtime's (``runtime/include/bnn_kernels.h``, the shared library the
  installation builds), called through ctypes by thin wrappers that check their arguments and split a batch over
  :mod:`bnncl.device.cruntime`'s threads; :mod:`._native` holds that plumbing. The integer kernels of the learning
  step's blocks (work B) are numba's (compiled once and cached on disk, ``cache=True``). Only :mod:`.integer`
  imports numba, and this package imports it (and :mod:`.registry`, which lists it) on first use of one of its
  names, so that inference and the head's learners never import numba; without numba installed (it is the
  ``blocks`` extra) that first use is a ConfigError saying so.
* One contract, :mod:`.registry`: ``KERNELS`` registers every optimized kernel beside its reference, and the two
  return the same result bit for bit for the same arguments, on every CPU.
* One test suite over the registry (``tests/device/kernels/test_registry.py``) holds every entry to that contract
  and every optimized public kernel to being registered; the family tests (``tests/device/kernels/test_<family>.py``)
  hold kernels and references against float64 oracles, edge cases and refusals.

Every public name is re-exported here: ``from bnncl.device.kernels import bconv`` and ``kernels.bconv`` work.

Layout: activations are NHWC, float32 when real-valued and packed along channels (``bitpack``) when binary.

For K binary inputs packed in words, ``dot(a, w) = K - 2 * popcount(a xor w)``: the xor counts disagreements.
"""

from __future__ import annotations

from importlib import import_module

from bnncl.core.functional import avgpool_reference
from bnncl.device.kernels.binary import (
    bconv,
    bconv_reference,
    bgemm,
    bgemm_reference,
    conv_weights_for_kernel,
    pack_below,
    pack_below_reference,
)
from bnncl.device.kernels.epilogue import block_epilogue, block_epilogue_reference, shortcut_affine
from bnncl.device.kernels.floating import (
    avgpool,
    conv2d,
    conv2d_reference,
    global_avgpool,
    sign_conv_float,
)

# the names that import numba (the integer family, and the registry that lists it): loaded on first use
_LAZY = {"PARALLEL_MIN_WORK": "integer", "col2im": "integer", "imatmul": "integer", "imatmul_reference": "integer",
         "KERNELS": "registry", "UNREGISTERED": "registry", "Kernel": "registry", "col2im_reference": "registry"}

__all__ = [
    "KERNELS", "PARALLEL_MIN_WORK", "UNREGISTERED", "Kernel", "avgpool", "avgpool_reference", "bconv",
    "bconv_reference", "bgemm", "bgemm_reference", "block_epilogue", "block_epilogue_reference", "col2im",
    "col2im_reference", "conv2d", "conv2d_reference", "conv_weights_for_kernel", "global_avgpool", "imatmul",
    "imatmul_reference", "pack_below", "pack_below_reference", "shortcut_affine", "sign_conv_float",
]


def __getattr__(name):
    if name in _LAZY:
        try:
            module = import_module(f"{__name__}.{_LAZY[name]}")
        except ModuleNotFoundError as e:
            if e.name not in ("numba", "llvmlite"):
                raise
            from bnncl.core.errors import ConfigError

            raise ConfigError("back-propagation through blocks on the device (work B: an LR layer below the head) "
                              "needs numba's kernels: pip install 'bnncl[blocks]' (the head's learners need NumPy and "
                              "the C library alone)") from None
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
