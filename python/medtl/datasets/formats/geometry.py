"""Voxel <-> world (patient, mm) transforms of a CT volume, as DICOM and ITK define them.

Index (i, j, k) is (column, row, slice); world = origin + direction @ (spacing * index), where
the direction's columns are the row direction cosines (ImageOrientationPatient[:3]), the column
direction cosines (ImageOrientationPatient[3:]) and the slice normal. Arrays are stored
(k, j, i), the order `SimpleITK.GetArrayFromImage` uses; `world_to_array` gives that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    origin: np.ndarray      # (3,) world mm of voxel (0, 0, 0)
    spacing: np.ndarray     # (3,) mm along i, j, k
    direction: np.ndarray   # (3, 3) columns: world directions of i, j, k
    shape: tuple[int, int, int]  # array shape (nk, nj, ni)

    def __post_init__(self) -> None:
        if np.any(np.asarray(self.spacing) <= 0):
            raise ValueError(f"voxel spacing must be positive, got {self.spacing}")

    @property
    def _to_world(self) -> np.ndarray:
        return np.asarray(self.direction, float) * np.asarray(self.spacing, float)[None, :]

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self._to_world.T + np.asarray(self.origin, float)

    def world_to_index(self, world: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) of world points (n x 3 or 3)."""
        world = np.asarray(world, dtype=float)
        return np.linalg.solve(self._to_world, (world - self.origin).T).T

    def world_to_array(self, world: np.ndarray) -> np.ndarray:
        """Continuous array index (k, j, i) of world points."""
        return self.world_to_index(world)[..., ::-1]

    def world_vectors_to_array(self, vectors: np.ndarray) -> np.ndarray:
        """World displacement vectors (mm) as array-index displacements (k, j, i)."""
        vectors = np.asarray(vectors, dtype=float)
        return np.linalg.solve(self._to_world, vectors.T).T[..., ::-1]

    def inside(self, world: np.ndarray) -> np.ndarray:
        """Whether each world point lies within the volume's voxels (half a voxel at the edges)."""
        idx = np.atleast_2d(self.world_to_index(world))
        size = np.asarray(self.shape[::-1], float)
        return np.all((idx >= -0.5) & (idx <= size - 0.5), axis=-1)

    def extent_mm(self) -> np.ndarray:
        return np.asarray(self.shape[::-1], float) * np.asarray(self.spacing, float)


def stack_tilt(positions: np.ndarray, normal: np.ndarray) -> tuple[int, float, float]:
    """How far a stack of slice positions leaves the line along the slices' normal.

    `positions` (n x 3, sorted along `normal`) are the slices' first-voxel corners. Returns the
    index of the slice farthest from the line through the first one along the normal, its
    offset across the slice plane (mm) and the tilt angle that offset makes (degrees): the
    gantry tilt when the scanner tilted its gantry and stacked the slices along the table.
    """
    rel = np.asarray(positions, float) - np.asarray(positions, float)[0]
    normal = np.asarray(normal, float)
    along = rel @ normal
    offset = np.linalg.norm(rel - along[:, None] * normal[None, :], axis=1)
    k = int(np.argmax(offset))
    return k, float(offset[k]), float(np.degrees(np.arctan2(offset[k], abs(along[k]))))
