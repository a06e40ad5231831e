"""Cubic B-spline interpolation of CT volumes, fast enough for 2.5D view sampling.

scipy's `map_coordinates(order=3)` manages about 300 views (3 x 64 x 64 points) a second per
core; the lymph-node study needs millions. `_bspline.c` does the same arithmetic (scipy's
mirror-boundary prefilter, then the 4 x 4 x 4 tensor-product kernel) several times faster. It is
compiled once per machine with the system C compiler (the one that built Caffe) into a cache
directory; where no compiler works, scipy computes the same values, more slowly, and
:data:`backend` says which one is in use.

Boundaries are ITK's (`BSplineInterpolateImageFunction`, "uses mirror boundary conditions", what
SimpleITK's sitkBSpline resampling computes): the coefficients of the mirror-extended volume,
taps beyond the coefficient array mirrored back, and samples outside the volume's voxels
(continuous index outside [-0.5, n - 0.5), ITK's `IsInsideBuffer`) set to a fill value.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from medtl import io
from medtl.errors import MedtlError

SOURCE = Path(__file__).with_name("_bspline.c")
CFLAGS = ["-O3", "-std=gnu99", "-fPIC", "-shared", "-fno-math-errno"]
# -march=native is worth about a quarter more speed; the cache key includes the CPU, so a
# library built for one CPU is never loaded on another.
TUNED = ["-march=native"]


class NativeBuildError(MedtlError, RuntimeError):
    """The C kernel could not be compiled or loaded."""


def _cache_dir() -> Path:
    root = os.environ.get("MEDTL_NATIVE_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medtl" / "native"


def _cpu_fingerprint() -> bytes:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor().encode()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep))).encode()


def _library_path(compiler: str, flags: list[str]) -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *flags]).encode()
                         + platform.machine().encode() + sys.platform.encode()
                         + _cpu_fingerprint()).hexdigest()[:16]
    return _cache_dir() / f"libmedtl_bspline-{key}.so"


def build_native() -> Path:
    """Compile `_bspline.c` (once; cached by source, flags and platform); returns the library."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"no C compiler {compiler!r} on PATH (set CC)")
    errors = []
    for flags in ([*CFLAGS, *TUNED], CFLAGS):
        lib = _library_path(compiler, flags)
        if lib.is_file():
            return lib
        try:
            with io.atomic_path(lib) as tmp:
                done = subprocess.run([compiler, *flags, "-o", str(tmp), str(SOURCE), "-lm"],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise NativeBuildError(done.stderr.strip())
            return lib
        except NativeBuildError as exc:
            errors.append(str(exc))
    raise NativeBuildError(f"{compiler} failed on {SOURCE}:\n" + "\n".join(errors))


_F32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_F64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
_U8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
_L = ctypes.c_long


@cache
def native() -> ctypes.CDLL | None:
    """The loaded C kernel, or None when it cannot be built here (scipy is used instead)."""
    if os.environ.get("MEDTL_BSPLINE") == "scipy":
        return None
    try:
        lib = ctypes.CDLL(str(build_native()))
    except (NativeBuildError, OSError) as exc:
        print(f"medtl: B-spline C kernel unavailable ({exc}); using scipy", file=sys.stderr)
        return None
    lib.medtl_prefilter.argtypes = [_F32, _L, _L, _L, _F64]
    lib.medtl_prefilter.restype = None
    f32 = ctypes.c_float
    lib.medtl_sample_planes.argtypes = [_F32, _L, _L, _L, _F64, _F64, _F64, _L, _L, _L, _F64,
                                        f32, _F32]
    lib.medtl_sample_planes.restype = None
    lib.medtl_sample_planes_u8.argtypes = [_F32, _L, _L, _L, _F64, _F64, _F64, _L, _L, _L,
                                           _F64, f32, f32, f32, _U8]
    lib.medtl_sample_planes_u8.restype = None
    lib.medtl_sample_points.argtypes = [_F32, _L, _L, _L, _F64, _L, _F64, f32, _F32]
    lib.medtl_sample_points.restype = None
    return lib


def backend() -> str:
    """"native" (the C kernel) or "scipy"."""
    return "native" if native() is not None else "scipy"


def prefilter(volume: np.ndarray) -> np.ndarray:
    """B-spline coefficients (order 3, mirror boundary) of a 3D volume, as float32."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    lib = native()
    if lib is None:
        return ndimage.spline_filter(volume, order=3, mode="mirror", output=np.float32)
    coef = np.array(volume, dtype=np.float32, order="C", copy=True)
    nz, ny, nx = coef.shape
    scratch = np.empty(max(ny * nx, 1), dtype=np.float64)
    lib.medtl_prefilter(coef, nz, ny, nx, scratch)
    return coef


def _check_coef(coef: np.ndarray) -> np.ndarray:
    if coef.ndim != 3 or coef.dtype != np.float32 or not coef.flags.c_contiguous:
        raise ValueError("coefficients must be a C-contiguous float32 3D array (use prefilter)")
    return coef


Inside = tuple[np.ndarray, np.ndarray] | None
"""(lo, hi): the continuous indices (array axis order) the volume's voxels cover, [lo, hi) on
each axis; samples outside are the fill value. None: everywhere inside."""


def _inside(inside: Inside) -> np.ndarray:
    if inside is None:
        return np.array([-np.inf] * 3 + [np.inf] * 3)
    lo, hi = inside
    return np.ascontiguousarray(np.concatenate([np.ravel(lo), np.ravel(hi)]), dtype=np.float64)


def _fill_outside(values: np.ndarray, pts: np.ndarray, inside: Inside, fill: float
                  ) -> np.ndarray:
    bounds = _inside(inside)
    out = np.any((pts < bounds[:3]) | (pts >= bounds[3:]), axis=1)
    values[out] = np.float32(fill)
    return values


def sample_points(coef: np.ndarray, points: np.ndarray, inside: Inside = None,
                  fill: float = 0.0) -> np.ndarray:
    """The spline at continuous indices `points` (n x 3, array axis order), float32 (n,);
    `fill` at points outside `inside`."""
    coef = _check_coef(coef)
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    lib = native()
    if lib is None:
        values = ndimage.map_coordinates(coef, pts.T, order=3, prefilter=False, mode="mirror",
                                         output=np.float32)
        return _fill_outside(values, pts, inside, fill)
    out = np.empty(len(pts), dtype=np.float32)
    lib.medtl_sample_points(coef, *coef.shape, pts, len(pts), _inside(inside), fill, out)
    return out


def _planes_args(coef, origin, du, dv):
    coef = _check_coef(coef)
    origin, du, dv = (np.ascontiguousarray(a, dtype=np.float64).reshape(-1, 3)
                      for a in (origin, du, dv))
    if not len(du) == len(dv) == len(origin):
        raise ValueError("origin, du and dv must have the same number of planes")
    return coef, origin, du, dv


def sample_planes_u8(coef: np.ndarray, origin: np.ndarray, du: np.ndarray, dv: np.ndarray,
                     height: int, width: int, window: tuple[float, float],
                     inside: Inside = None, fill: float = 0.0) -> np.ndarray:
    """:func:`sample_planes` mapped linearly from `window` (lo, hi) to uint8 0..255."""
    lo, hi = window
    scale = np.float32(255.0 / (hi - lo))
    lib = native()
    if lib is None:
        planes = sample_planes(coef, origin, du, dv, height, width, inside, fill)
        return np.clip(np.rint((planes - np.float32(lo)) * scale), 0, 255).astype(np.uint8)
    coef, origin, du, dv = _planes_args(coef, origin, du, dv)
    out = np.empty((len(origin), height, width), dtype=np.uint8)
    lib.medtl_sample_planes_u8(coef, *coef.shape, origin, du, dv, len(origin), height, width,
                               _inside(inside), fill, np.float32(lo), scale, out)
    return out


def sample_planes(coef: np.ndarray, origin: np.ndarray, du: np.ndarray, dv: np.ndarray,
                  height: int, width: int, inside: Inside = None, fill: float = 0.0
                  ) -> np.ndarray:
    """P planes of `height` x `width` samples, float32 (P, height, width).

    Plane p, row r, column q is the spline at index origin[p] + r * dv[p] + q * du[p]
    (P x 3 arrays in array axis order, voxel units); `fill` where that lies outside `inside`.
    """
    coef, origin, du, dv = _planes_args(coef, origin, du, dv)
    n = len(origin)
    lib = native()
    if lib is None:
        r, q = np.mgrid[0:height, 0:width].astype(np.float64)
        pts = (origin[:, None, None, :] + r[None, :, :, None] * dv[:, None, None, :]
               + q[None, :, :, None] * du[:, None, None, :])
        return sample_points(coef, pts.reshape(-1, 3), inside, fill).reshape(n, height, width)
    out = np.empty((n, height, width), dtype=np.float32)
    lib.medtl_sample_planes(coef, *coef.shape, origin, du, dv, n, height, width,
                            _inside(inside), fill, out)
    return out
