"""Resizing C x H x W images by separable matrices: bilinear up, area-average down.

Shin et al. up-sample the 64 x 64 LN views bilinearly to 256 x 256 (Sec. IV-A) and
down-sample them to 32 x 32 for CifarNet; ILD slices go from 512 to 256 and patches from 64
(or 32) up to 256 (Sec. IV-B). Pixel centres are aligned (the half-pixel convention).
"""

from __future__ import annotations

from functools import cache

import numpy as np


@cache
def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = x - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    m.setflags(write=False)
    return m


@cache
def _area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Each output pixel the average of the input it covers (partial pixels weighted)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        a, b = edges[o], edges[o + 1]
        for i in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
            m[o, i] = max(0.0, min(b, i + 1) - max(a, i))
        m[o] /= m[o].sum()
    m.setflags(write=False)
    return m


def resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    return _bilinear_matrix(n_out, n_in) if n_out >= n_in else _area_matrix(n_out, n_in)


def resize(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Resize a C x H x W (or H x W) image; uint8 in, uint8 out (rounded), else float32."""
    width = width or height
    squeeze = image.ndim == 2
    img = image[None] if squeeze else image
    if img.shape[1:] == (height, width):
        out = img.copy()
    else:
        rows = resize_matrix(height, img.shape[1])
        cols = resize_matrix(width, img.shape[2])
        out = np.einsum("oh,chw,pw->cop", rows, img.astype(np.float64), cols, optimize=True)
        if image.dtype == np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        else:
            out = out.astype(np.float32)
    return out[0] if squeeze else out
