"""The C runtime (runtime/, ``bnn.h``) from Python: the shared library the package's installation builds
(``bnncl/device/_bnn*.so``), loaded with ctypes, running a model file's bytes in place in one arena.

``Model.load(path, backend="c")`` and ``bnncl device predict --runtime c`` use it. It computes what the packed
backend computes: the same latents bit for bit (the same kernels' order of float32 operations), the logits within
float32 rounding of the packed backend's (the head sums in its own fixed order where NumPy uses BLAS's).

Threads: the library itself is single-threaded (one model, one arena, one image at a time: what a device runs). On
a host, a batch is split into contiguous chunks run at once by as many models on the same bytes, each with its own
arena, from a thread pool (ctypes releases the GIL during each call): ``set_num_threads`` (default: the CPUs this
process may run on). Every image's result is the one it gets alone. The packed backend's kernels (the same library's,
:mod:`bnncl.device.kernels`) split their batches over the same threads and pool.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from bnncl.core.errors import ConfigError, ModelFileError

ERROR_CODES = {1: "argument", 2: "format", 3: "version", 4: "checksum", 5: "model", 6: "storage", 7: "no state"}


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 120)]


class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("height", "width", "channels", "classes", "layers", "lr_layer",
                                                     "latent_channels", "latent_height", "latent_width",
                                                     "latent_binary")] + [("arena_bytes", ctypes.c_size_t)]


LIBRARY_VARIABLE = "BNNCL_LIBRARY"  # another build of the library to load (tools/cpu_target.py: another ISA's path)


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The built C runtime (the package's, or the file $BNNCL_LIBRARY names), or a ConfigError saying how to build
    it."""
    path = os.environ.get(LIBRARY_VARIABLE)
    if path and not os.path.isfile(path):
        raise ConfigError(f"{LIBRARY_VARIABLE}={path}: no such file")
    if not path:
        spec = importlib.util.find_spec("bnncl.device._bnn")
        if spec is None or not spec.origin:
            raise ConfigError("the C runtime is not built: reinstall bnncl (pip install -e . or make setup builds it "
                              "with the system C compiler)")
        path = spec.origin
    lib = ctypes.CDLL(path)
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


def address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's first byte (ctypes.from_buffer: half the cost of .ctypes.data, which a
    read-only array still needs)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError):  # read-only, or empty
        return a.ctypes.data


MIN_IMAGES_PER_THREAD = 8  # below this a thread's start costs about what it saves (an image takes ~25-100 us)
_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def set_num_threads(n: int) -> None:
    """The number of threads a batch is split over (1: the calling thread only)."""
    global _threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"the number of threads must be a whole number, at least 1 (not {n!r})")
    _threads = int(n)


def get_num_threads() -> int:
    return _threads


def executor() -> ThreadPoolExecutor:
    """The thread pool the batches are split over (CModel's and the packed backend's kernels,
    :mod:`bnncl.device.kernels`), made on first use with ``get_num_threads()`` workers."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < _threads:  # made again, larger, when more threads are asked for
            _pool, _pool_size = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="bnncl-c"), _threads
        return _pool


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
        self._arena_bytes = need.value
        self._workers: list[tuple[ctypes.c_void_p, np.ndarray]] = []  # (model, its arena), one per thread
        self._model = self._worker(0)
        self.info = Info()
        lib.bnn_get_info(self._model, ctypes.byref(self.info))

    def _worker(self, i: int) -> ctypes.c_void_p:
        """The i-th model on these bytes (made on first use: its own arena, the bytes shared)."""
        while len(self._workers) <= i:
            arena, handle, err = np.zeros(self._arena_bytes, np.uint8), ctypes.c_void_p(), Error()
            self._check(library().bnn_init(self._blob.ctypes.data, self._size, arena.ctypes.data, arena.nbytes,
                                           ctypes.byref(handle), ctypes.byref(err)), err)
            self._workers.append((handle, arena))
        return self._workers[i][0]

    def _check(self, status: int, err: Error) -> None:
        if status:
            raise ModelFileError(f"{self.path}: {err.message.decode(errors='replace')}")

    def _run(self, call, images: np.ndarray, outputs: list[np.ndarray]) -> None:
        """call(model, images pointer, count, *output pointers, err) over the batch, split over the threads:
        chunk j of the images and of every output to worker j."""
        n = len(images)
        if n == 0:
            return
        chunks = max(1, min(_threads, n // MIN_IMAGES_PER_THREAD))
        if chunks == 1:  # the calling thread, the whole batch: no slices, no closure (a batch of one is ~25 us)
            err = Error()
            outs = [None if o is None else address(o) for o in outputs]
            self._check(call(self._model, address(images), n, *outs, ctypes.byref(err)), err)
            return
        bounds = [n * j // chunks for j in range(chunks + 1)]
        for j in range(chunks):
            self._worker(j)  # made here, in the calling thread

        def part(j: int) -> None:
            a, b = bounds[j], bounds[j + 1]
            err = Error()
            outs = [None if o is None else o[a:b].ctypes.data for o in outputs]
            self._check(call(self._workers[j][0], images[a:b].ctypes.data, b - a, *outs, ctypes.byref(err)), err)

        for future in [executor().submit(part, j) for j in range(chunks)]:
            future.result()

    @property
    def arena_bytes(self) -> int:
        return int(self.info.arena_bytes)

    def _images(self, images: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(images, np.uint8)

    def logits(self, images: np.ndarray) -> np.ndarray:
        images = self._images(images)
        out = np.empty((len(images), self.info.classes), np.float32)
        self._run(library().bnn_logits, images, [out])
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = self._images(images)
        out = np.empty(len(images), np.int32)
        self._run(library().bnn_predict, images, [out])
        return out.astype(np.int64)

    def latent(self, images: np.ndarray) -> np.ndarray:
        """The LR layer's activation: packed bits (N, H, W, words) uint64 where it is binary, else float32
        (N, H, W, C)."""
        images, i = self._images(images), self.info
        shape = (len(images), i.latent_height, i.latent_width)
        if i.latent_binary:
            out = np.empty((*shape, -(-i.latent_channels // 64)), np.uint64)
            outputs = [None, out]
        else:
            out = np.empty((*shape, i.latent_channels), np.float32)
            outputs = [out, None]
        self._run(library().bnn_latent, images, outputs)
        return out
