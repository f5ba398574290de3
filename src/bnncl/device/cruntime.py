"""The C runtime (runtime/, ``bnn.h``) from Python: the shared library the package's installation builds
(``bnncl/device/_bnn*.so``), loaded with ctypes, running a model file's bytes in place in one arena.

``Model.load(path, backend="c")`` and ``bnncl device predict --runtime c`` use it. It computes what the packed
backend computes: the same latents bit for bit (the same kernels' order of float32 operations), the logits within
float32 rounding of the packed backend's (the head sums in its own fixed order where NumPy uses BLAS's).
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache

import numpy as np

from bnncl.core.errors import ConfigError, ModelFileError

ERROR_CODES = {1: "argument", 2: "format", 3: "version", 4: "checksum", 5: "model"}


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 120)]


class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("height", "width", "channels", "classes", "layers", "lr_layer",
                                                     "latent_channels", "latent_height", "latent_width",
                                                     "latent_binary")] + [("arena_bytes", ctypes.c_size_t)]


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The built C runtime, or a ConfigError saying how to build it."""
    spec = importlib.util.find_spec("bnncl.device._bnn")
    if spec is None or not spec.origin:
        raise ConfigError("the C runtime is not built: reinstall bnncl (pip install -e . or make setup builds it "
                          "with the system C compiler)")
    lib = ctypes.CDLL(spec.origin)
    p, size = ctypes.c_void_p, ctypes.c_size_t
    err = ctypes.POINTER(Error)
    lib.bnn_arena_size.argtypes = [p, size, ctypes.POINTER(size), err]
    lib.bnn_init.argtypes = [p, size, p, size, ctypes.POINTER(p), err]
    lib.bnn_get_info.argtypes = [p, ctypes.POINTER(Info)]
    lib.bnn_logits.argtypes = [p, p, size, p, err]
    lib.bnn_predict.argtypes = [p, p, size, p, err]
    lib.bnn_latent.argtypes = [p, p, size, p, p, err]
    lib.bnn_build_path.restype = ctypes.c_char_p
    for f in (lib.bnn_arena_size, lib.bnn_init, lib.bnn_get_info, lib.bnn_logits, lib.bnn_predict, lib.bnn_latent):
        f.restype = ctypes.c_int
    return lib


def build_path() -> str:
    """The popcount path the library was built with: portable, avx2, avx512 or neon."""
    return library().bnn_build_path().decode()


class CModel:
    """A model file's bytes run by the C runtime. The bytes (8-byte aligned: held in a uint64 array) and the arena
    live as long as this object."""

    def __init__(self, blob: bytes, path: str = "model"):
        self.path = path
        self._blob = np.frombuffer(blob + b"\0" * (-len(blob) % 8), np.uint64).copy()  # 8-byte aligned
        self._size = len(blob)
        lib, err, need = library(), Error(), ctypes.c_size_t()
        self._check(lib.bnn_arena_size(self._blob.ctypes.data, self._size, ctypes.byref(need), ctypes.byref(err)),
                    err)
        self._arena = np.zeros(need.value, np.uint8)
        handle = ctypes.c_void_p()
        self._check(lib.bnn_init(self._blob.ctypes.data, self._size, self._arena.ctypes.data, need.value,
                                 ctypes.byref(handle), ctypes.byref(err)), err)
        self._model = handle
        self.info = Info()
        lib.bnn_get_info(handle, ctypes.byref(self.info))

    def _check(self, status: int, err: Error) -> None:
        if status:
            raise ModelFileError(f"{self.path}: {err.message.decode(errors='replace')}")

    @property
    def arena_bytes(self) -> int:
        return int(self.info.arena_bytes)

    def _images(self, images: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(images, np.uint8)

    def logits(self, images: np.ndarray) -> np.ndarray:
        images, err = self._images(images), Error()
        out = np.empty((len(images), self.info.classes), np.float32)
        if len(images):
            self._check(library().bnn_logits(self._model, images.ctypes.data, len(images), out.ctypes.data,
                                             ctypes.byref(err)), err)
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        images, err = self._images(images), Error()
        out = np.empty(len(images), np.int32)
        if len(images):
            self._check(library().bnn_predict(self._model, images.ctypes.data, len(images), out.ctypes.data,
                                              ctypes.byref(err)), err)
        return out.astype(np.int64)

    def latent(self, images: np.ndarray) -> np.ndarray:
        """The LR layer's activation: packed bits (N, H, W, words) uint64 where it is binary, else float32
        (N, H, W, C)."""
        images, err, i = self._images(images), Error(), self.info
        shape = (len(images), i.latent_height, i.latent_width)
        if i.latent_binary:
            out = np.empty((*shape, -(-i.latent_channels // 64)), np.uint64)
            real, bits = None, out.ctypes.data
        else:
            out = np.empty((*shape, i.latent_channels), np.float32)
            real, bits = out.ctypes.data, None
        if len(images):
            self._check(library().bnn_latent(self._model, images.ctypes.data, len(images), real, bits,
                                             ctypes.byref(err)), err)
        return out
