"""Helpers two kernel families share: output sizes, and the padded taps and 3x3 windows that the binary and the
float convolutions load (numba, inlined into their callers)."""

from __future__ import annotations

import numba


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


@numba.njit(cache=True, inline="always")
def _tap(x, b, iy, ix, c, h, wd, pad_value):
    if iy < 0 or iy >= h or ix < 0 or ix >= wd:
        return pad_value
    return x[b, iy, ix, c]


@numba.njit(cache=True, inline="always")
def _nine(x, b, y0, x0, c, h, wd, pad_value):
    """The 3x3 window at (y0, x0) of channel (or word) c, padded with ``pad_value``."""
    return (_tap(x, b, y0, x0, c, h, wd, pad_value), _tap(x, b, y0, x0 + 1, c, h, wd, pad_value),
            _tap(x, b, y0, x0 + 2, c, h, wd, pad_value), _tap(x, b, y0 + 1, x0, c, h, wd, pad_value),
            _tap(x, b, y0 + 1, x0 + 1, c, h, wd, pad_value), _tap(x, b, y0 + 1, x0 + 2, c, h, wd, pad_value),
            _tap(x, b, y0 + 2, x0, c, h, wd, pad_value), _tap(x, b, y0 + 2, x0 + 1, c, h, wd, pad_value),
            _tap(x, b, y0 + 2, x0 + 2, c, h, wd, pad_value))
