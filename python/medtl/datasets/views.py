"""2.5D views of a CT volume around a point (Roth et al. 2014; Shin et al. 2016 Sec. II).

A view has a field of view (FOV, the side of the square in mm), a translation of its centre
and a rotation of the frame. The three orthogonal planes through the centre of the rotated
frame are sampled on a size x size grid by cubic B-spline interpolation and are returned in
picture order R, G, B: R the plane spanned by the frame's first two axes ("axial"), G the
first and third ("coronal"), B the second and third ("sagittal"); builders store them in
Caffe's order with `medtl.datasets.channels.to_caffe`. With no rotation these are the usual axial
(rows anterior->posterior), coronal and sagittal (rows superior->inferior) images. A point at
the view centre lies between the four central pixels of every plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from medtl.datasets.formats import bspline
from medtl.datasets.formats.geometry import Geometry

# (column axis, row axis, row sign) of the rotated frame for R, G, B.
PLANES = ((0, 1, 1.0), (0, 2, -1.0), (1, 2, -1.0))
PREFILTER_MARGIN = 12  # voxels: the prefilter's pole (0.268) decays below 2e-7 by then


@dataclass(frozen=True)
class ViewParams:
    """Parameters of V views: FOV (V,), translation (V, 3) mm, rotation (V, 3, 3)."""

    fov_mm: np.ndarray
    translation_mm: np.ndarray
    rotation: np.ndarray

    def __len__(self) -> int:
        return len(self.fov_mm)

    def take(self, index: np.ndarray) -> ViewParams:
        return ViewParams(self.fov_mm[index], self.translation_mm[index], self.rotation[index])

    @staticmethod
    def concat(parts: list[ViewParams]) -> ViewParams:
        return ViewParams(np.concatenate([p.fov_mm for p in parts]),
                          np.concatenate([p.translation_mm for p in parts]),
                          np.concatenate([p.rotation for p in parts]))


def draw_params(rng: np.random.Generator, n: int, fov_mm: tuple[float, float],
                max_translation_mm: float, rotate: bool) -> ViewParams:
    """n random views: FOV uniform in `fov_mm`; translation a uniformly random direction times
    a length uniform in [0, max] (as Roth's pipeline draws it); rotation uniform on SO(3)."""
    fov = rng.uniform(fov_mm[0], fov_mm[1], n)
    direction = rng.normal(size=(n, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    translation = direction * rng.uniform(0.0, max_translation_mm, (n, 1))
    if rotate:
        rotation = Rotation.random(n, random_state=rng).as_matrix().reshape(n, 3, 3)
    else:
        rotation = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    return ViewParams(fov, translation, rotation)


def identity_params(n: int, fov_mm: float) -> ViewParams:
    return ViewParams(np.full(n, float(fov_mm)), np.zeros((n, 3)),
                      np.broadcast_to(np.eye(3), (n, 3, 3)).copy())


def plane_vectors(centres: np.ndarray, params: ViewParams, size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World origin (pixel 0, 0) and per-pixel column / row steps of the 3V planes (3V x 3)."""
    centres = np.asarray(centres, float).reshape(-1, 3) + params.translation_mm
    step = (params.fov_mm / size)[:, None]
    half = (size - 1) / 2.0
    origins, dus, dvs = [], [], []
    for col, row, sign in PLANES:
        du = params.rotation[:, :, col] * step
        dv = params.rotation[:, :, row] * step * sign
        origins.append(centres - half * (du + dv))
        dus.append(du)
        dvs.append(dv)
    # interleave so planes of one view are consecutive: (V, 3 planes, 3)
    return (np.stack(origins, 1).reshape(-1, 3), np.stack(dus, 1).reshape(-1, 3),
            np.stack(dvs, 1).reshape(-1, 3))


def window_to_uint8(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Linear map of [lo, hi] HU to 0..255, clipped, rounded."""
    lo, hi = window
    scaled = (hu - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


class ViewSampler:
    """Renders views of one volume. :meth:`prepare` computes the B-spline coefficients once
    for the box that all of a patient's views need (plus a margin that makes the result equal
    to prefiltering the whole volume); :meth:`render` then costs only the interpolation.

    The spline is ITK's (what SimpleITK's sitkBSpline resampling gives): mirror boundary at the
    volume's faces, and `pad_hu` wherever a view leaves the volume's voxels. Padding the volume
    with `pad_hu` before the prefilter instead would put a step of a thousand HU at the first
    and last slices, and the cubic spline overshoots it (bright lines along the scan's edges in
    coronal and sagittal views)."""

    def __init__(self, hu: np.ndarray, geometry: Geometry, *, size: int = 64,
                 pad_hu: float = -1024.0) -> None:
        self.hu = hu
        self.geometry = geometry
        self.size = size
        self.pad_hu = pad_hu
        self._coef: np.ndarray | None = None
        self._lo = np.zeros(3, int)
        self._hi = np.zeros(3, int)
        self._needed = (self._lo, self._hi)

    def _plane_index(self, centres: np.ndarray, params: ViewParams):
        o, du, dv = plane_vectors(centres, params, self.size)
        g = self.geometry
        return g.world_to_array(o), g.world_vectors_to_array(du), g.world_vectors_to_array(dv)

    def _bounds(self, o, du, dv) -> tuple[np.ndarray, np.ndarray]:
        n = self.size - 1
        corners = np.concatenate([o, o + n * du, o + n * dv, o + n * (du + dv)])
        return (np.floor(corners.min(0)).astype(int) - 2,
                np.ceil(corners.max(0)).astype(int) + 3)

    def prepare(self, centres: np.ndarray, params: ViewParams) -> None:
        """Prefilter the box covering these views (a later render outside it re-prepares).

        The box is cut PREFILTER_MARGIN voxels beyond what the views need, and never beyond
        the volume: where it ends at the volume's face its mirror boundary is ITK's.
        """
        needed = self._bounds(*self._plane_index(centres, params))
        shape = np.array(self.hu.shape)
        lo = np.clip(needed[0] - PREFILTER_MARGIN, 0, shape - 1)
        hi = np.clip(needed[1] + PREFILTER_MARGIN, lo + 1, shape)
        box = self.hu[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        self._coef = bspline.prefilter(box)
        self._lo, self._hi = lo, hi
        self._needed = needed

    def _inside(self) -> tuple[np.ndarray, np.ndarray]:
        """The volume's voxels, [-0.5, n - 0.5) per axis, in the box's indices."""
        return -0.5 - self._lo, np.array(self.hu.shape) - 0.5 - self._lo

    def _ready(self, centres: np.ndarray, params: ViewParams):
        o, du, dv = self._plane_index(centres, params)
        lo, hi = self._bounds(o, du, dv)
        if (self._coef is None or np.any(lo < self._needed[0])
                or np.any(hi > self._needed[1])):
            self.prepare(centres, params)
        return o - self._lo, du, dv

    def render_hu(self, centres: np.ndarray, params: ViewParams) -> np.ndarray:
        """Float32 HU views, V x 3 x size x size."""
        o, du, dv = self._ready(centres, params)
        planes = bspline.sample_planes(self._coef, o, du, dv, self.size, self.size,
                                       self._inside(), self.pad_hu)
        return planes.reshape(len(params), 3, self.size, self.size)

    def render(self, centres: np.ndarray, params: ViewParams,
               window: tuple[float, float]) -> np.ndarray:
        """uint8 views, V x 3 x size x size, windowed to `window` HU (as
        :func:`window_to_uint8` of :meth:`render_hu`, in one pass)."""
        o, du, dv = self._ready(centres, params)
        planes = bspline.sample_planes_u8(self._coef, o, du, dv, self.size, self.size, window,
                                          self._inside(), self.pad_hu)
        return planes.reshape(len(params), 3, self.size, self.size)
