"""Bit-packing of signs into 64-bit words along the channel axis (NumPy only).

Bit ``j`` of word ``w`` holds channel ``64 w + j``: 1 for a negative value, 0 for a non-negative one (sign(0) = +1,
as in training). Unused tail bits are 0 in every packed tensor, so they add nothing to ``popcount(a xor w)``, and a
zero word is a pixel of +1s: exactly the +1 padding the binary convs were trained with.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


def words_for(channels: int) -> int:
    return (channels + WORD_BITS - 1) // WORD_BITS


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Signs of ``x`` (..., C) packed into uint64 words (..., ceil(C / 64))."""
    x = np.asarray(x)
    c = x.shape[-1]
    nw = words_for(c)
    negative = np.zeros((*x.shape[:-1], nw * WORD_BITS), dtype=bool)
    negative[..., :c] = x < 0
    packed = np.packbits(negative, axis=-1, bitorder="little")  # 8 bytes per word, least significant bit first
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def unpack_signs(words: np.ndarray, channels: int, dtype=np.float32) -> np.ndarray:
    """Inverse of :func:`pack_signs`: ±1 values (..., channels)."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    bits = np.unpackbits(words.view(np.uint8), axis=-1, count=None, bitorder="little")
    bits = bits.reshape(*words.shape[:-1], -1)[..., :channels]
    return (1 - 2 * bits.astype(np.int8)).astype(dtype)
