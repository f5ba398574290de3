"""The kernels' one contract (:mod:`bnncl.device.kernels.registry`), over every registered kernel: the optimized
kernel returns its reference's result bit for bit on the same random inputs; every optimized public kernel of the
package is registered (or listed in ``UNREGISTERED`` with the reason) and re-exported by the package.

The family files (test_binary.py, test_floating.py, test_epilogue.py, test_integer.py) hold the kernels and
references against float64 oracles, on edge cases and refusals; here only kernel against reference, on arguments
drawn at random (shapes, odd channel counts that leave words partly filled, strides, paddings, dtypes), so that
every seed is another case."""

import pkgutil

import numpy as np
import pytest

from bnncl.device import kernels
from bnncl.device.bitpack import pack_signs
from bnncl.device.kernels import KERNELS, UNREGISTERED, binary, epilogue, floating, integer
from fixtures import assert_same_bits

FAMILIES = {"binary": binary, "epilogue": epilogue, "floating": floating, "integer": integer}
ODD_CHANNELS = [1, 3, 33, 63, 64, 65, 70, 130]
SEEDS = range(8)


def _int(rng, lo, hi):
    """An int in [lo, hi]."""
    return int(rng.integers(lo, hi + 1))


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _image(rng, k=1):
    """(N, H, W) with H, W >= k."""
    return _int(rng, 1, 3), _int(rng, k, 9), _int(rng, k, 9)


# -- the arguments of each registered kernel, drawn from rng ---------------------------------------------------------

def bgemm_args(rng):
    m, n, k = _int(rng, 1, 20), _int(rng, 1, 20), _int(rng, 1, 300)
    return pack_signs(rng.standard_normal((m, k))), pack_signs(rng.standard_normal((n, k))), k


def bconv_args(rng):
    k, pad = _pick(rng, [(3, 1), (1, 0)])  # the two convs the optimized kernel runs (the backbones')
    cin, cout, stride = _pick(rng, ODD_CHANNELS), _int(rng, 1, 9), _int(rng, 1, 3)
    x = pack_signs(rng.standard_normal((*_image(rng), cin)))
    return x, pack_signs(rng.standard_normal((cout, k, k, cin))), cin, stride, pad


def pack_below_args(rng):
    c = _pick(rng, ODD_CHANNELS)
    x, threshold = _f32(rng, *_image(rng), c), _f32(rng, c, scale=0.5)
    ties = rng.random(x.shape) < 0.2  # x == threshold: bit 0
    return np.where(ties, threshold, x).astype(np.float32), threshold


def conv2d_args(rng):
    kh, kw = (3, 3) if rng.random() < 0.5 else (_int(rng, 1, 3), _int(rng, 1, 3))  # the 3x3 kernel and the generic
    cin, cout, stride, pad = _pick(rng, [1, 3, 33, 65]), _int(rng, 1, 16), _int(rng, 1, 2), _int(rng, 0, 1)
    bias = _f32(rng, cout) if rng.random() < 0.75 else None
    return _f32(rng, *_image(rng, max(kh, kw)), cin), _f32(rng, cout, kh, kw, cin), bias, stride, pad


def avgpool_args(rng):
    return _f32(rng, *_image(rng), _pick(rng, ODD_CHANNELS)), _int(rng, 1, 3)


def block_epilogue_args(rng):
    cs = _pick(rng, ODD_CHANNELS)
    c = cs * _int(rng, 1, 2)  # the shortcut's channels repeated to Cout
    n, h, w = _image(rng)
    dot = rng.integers(-9 * c, 9 * c + 1, (n, h, w, c)).astype(np.int32)
    threshold = _f32(rng, c, scale=0.5) if rng.random() < 0.75 else None
    want_real = threshold is None or rng.random() < 0.5
    return (dot, _f32(rng, c, scale=0.05), _f32(rng, c), _f32(rng, n, h, w, cs), _f32(rng, c, scale=0.3),
            _f32(rng, c, scale=0.25), _f32(rng, c, scale=0.3), threshold, want_real)


def imatmul_args(rng):
    dtype = _pick(rng, [np.int8, np.int16, np.int32, np.int64])
    magnitude = min(int(np.iinfo(dtype).max), _pick(rng, [2 ** 7, 2 ** 16]))  # int32 sums, and int64 ones
    m, k, n = _int(rng, 1, 40), _int(rng, 0, 130), _int(rng, 1, 40)
    return (rng.integers(-magnitude, magnitude + 1, (m, k)).astype(dtype),
            rng.integers(-magnitude, magnitude + 1, (k, n)).astype(dtype))


def col2im_args(rng):
    k, stride, pad = _int(rng, 1, 3), _int(rng, 1, 2), _int(rng, 0, 1)
    n, h, w = _image(rng, k)
    c = _int(rng, 1, 6)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    gcols = 10 * rng.standard_normal((n * ho * wo, c * k * k))
    dtype = _pick(rng, [np.float32, np.float64, np.int32, np.int64])
    return gcols.astype(dtype), (n, c, h, w, ho, wo), k, stride, pad


EXAMPLES = {"bgemm": bgemm_args, "bconv": bconv_args, "pack_below": pack_below_args, "conv2d": conv2d_args,
            "avgpool": avgpool_args, "block_epilogue": block_epilogue_args, "imatmul": imatmul_args,
            "col2im": col2im_args}


# -- the contract ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_optimized_kernel_returns_its_reference_bit_for_bit(name, seed):
    kernel = KERNELS[name]
    args = EXAMPLES[name](np.random.default_rng([seed, *name.encode()]))
    assert_same_bits(kernel.optimized(*args), kernel.reference(*args), f"{name}, seed {seed}")


def test_every_registered_kernel_has_an_example():
    assert sorted(EXAMPLES) == sorted(KERNELS)


# kernels whose reference is the NumPy core's own function (the hand-written backward uses it too): one function,
# not two copies of the same arithmetic
CORE_REFERENCES = {"avgpool": "bnncl.core.functional", "col2im": "bnncl.core.backprop"}


def test_entries_name_their_functions_and_family():
    for name, k in KERNELS.items():
        module = FAMILIES[k.family]
        assert k.name == name == k.optimized.__name__ and k.optimized.__module__ == module.__name__, name
        if name in CORE_REFERENCES:
            assert k.reference.__module__ == CORE_REFERENCES[name], name
        else:
            assert k.reference.__name__ == f"{name}_reference" and k.reference.__module__ == module.__name__, name
        assert getattr(module, name) is k.optimized and getattr(kernels, name) is k.optimized, name
        assert getattr(kernels, f"{name}_reference") is k.reference, name
        assert k.doc, name


def _public_functions(module):
    """The public callables ``module`` defines itself (not those it imports)."""
    return {n for n, v in vars(module).items()
            if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == module.__name__}


def test_every_optimized_public_kernel_is_registered():
    modules = {m.name for m in pkgutil.iter_modules(kernels.__path__) if not m.name.startswith("_")}
    assert modules == set(FAMILIES) | {"registry"}, "a family module the registry and this test do not know"
    public = set().union(*map(_public_functions, FAMILIES.values()))
    registered = {f.__name__ for k in KERNELS.values() for f in (k.optimized, k.reference)}
    assert not public - registered - set(UNREGISTERED), "public functions neither registered nor UNREGISTERED"
    assert set(UNREGISTERED) <= public - registered, "UNREGISTERED names a registered or missing function"
    assert all(UNREGISTERED.values())
    missing = {n for n in public if getattr(kernels, n, None) is None}
    assert not missing, f"not re-exported by bnncl.device.kernels: {sorted(missing)}"
    assert set(kernels.__all__) >= public
