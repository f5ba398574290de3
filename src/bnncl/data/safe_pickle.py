"""Loading the pickles that CIFAR-10 and CORe50 ship, without letting a file run code.

``pickle.load`` can call any importable function; these datasets only need builtins and NumPy arrays, so the
unpickler accepts exactly the globals that NumPy arrays are rebuilt from and refuses everything else.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from bnncl.core.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"), ("_codecs", "encode"), ("collections", "OrderedDict"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_pickle(path: Path, encoding: str = "latin1"):
    """Unpickle ``path`` (Python 2 pickles need ``latin1`` to keep byte strings intact)."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding=encoding).load()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except EOFError:
        raise DataError(f"{path}: truncated pickle (the file ends early)") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise DataError(f"{path}: not a readable pickle ({e})") from None
