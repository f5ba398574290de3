"""The device runtime: NumPy + numba only, never torch (``pip install bnncl`` without the ``train`` extra).

``Model.load(path).predict(images)`` runs an exported model file with bit-packed XNOR-popcount kernels;
``Learner.open(path, state).learn(images, labels)`` keeps learning on the device (integer arithmetic, 1-bit replay).
"""

from .learner import Learner
from .model import Model, normalize
from .modelfile import ModelFileError

__all__ = ["Learner", "Model", "ModelFileError", "normalize"]
