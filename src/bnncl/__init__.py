"""bnncl: on-device continual learning with binary neural networks.

The package has two sides that never mix:

* the torch side (``bnncl.binarizers``, ``bnncl.layers``, ``bnncl.models``, ``bnncl.learning``) pretrains and
  simulates, and needs the ``[train]`` extra;
* the device side (``bnncl.device``) and the data formats (``bnncl.data``) use NumPy and numba only.

Importing ``bnncl`` itself imports neither torch nor numba.
"""

__version__ = "0.1.0"
