"""The device runtime: NumPy, numba and the C runtime the installation builds, never torch (``pip install bnncl``
without the ``train`` extra).

``Model.load(path).predict(images)`` runs an exported model file with bit-packed XNOR-popcount kernels (the C
runtime's, through ctypes: inference never imports numba); ``Learner.open(path, state).learn(images, labels)`` keeps
learning on the device (integer arithmetic, numba's integer kernels, 1-bit replay).

The names below load on first use, so that importing one module (``bnncl.device.kernels``) does not import them all.
"""

from importlib import import_module

_EXPORTS = {"Learner": ".learner", "Model": ".model", "ModelFileError": ".modelfile"}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
