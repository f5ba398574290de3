"""bnncl: on-device continual learning with binary neural networks.

Three layers (README, "Layout"):

* the core (``bnncl.core``, and the dataset formats ``bnncl.data``): NumPy only, imports neither side below;
* the torch side (``bnncl.binarizers``, ``layers``, ``models``, ``checkpoint``, ``training``, ``simulation``,
  ``export``) pretrains and simulates, and needs the ``[train]`` extra;
* the device side (``bnncl.device``): the runtime and the on-device learner, NumPy, the C runtime's library
  and numba (the learner's integer kernels), never torch.

Importing ``bnncl`` itself imports neither torch nor numba.
"""

__version__ = "0.2.1"
