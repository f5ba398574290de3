"""The device runtime: NumPy + numba only, never torch (``pip install bnncl`` without the ``train`` extra).

``Model.load(path).predict(images)`` runs an exported model file with bit-packed XNOR-popcount kernels.
"""

from .model import Model, normalize
from .modelfile import ModelFileError

__all__ = ["Model", "ModelFileError", "normalize"]
