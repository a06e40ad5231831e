"""Keras `ImageDataGenerator` real-time augmentation (Boit & Zeng 2019 used it), reproduced
as documented transforms so Caffe, which has no such layer, can be fed augmented copies.

As keras_preprocessing's `random_transform` / `apply_affine_transform` (channels first):
rotation theta ~ U(-rotation_range, rotation_range) degrees; row shift tx ~
U(-height_shift_range, +) x rows and column shift ty ~ U(-width_shift_range, +) x columns;
shear ~ U(-shear_range, +) degrees; zoom zx, zy ~ U(1 - zoom_range, 1 + zoom_range) each;
the matrix rotation @ shift @ shear @ zoom is applied about the image centre with order-1
(bilinear) interpolation in (row, column) coordinates, mapping output pixels to input
pixels, `fill_mode` outside; then a horizontal flip with probability 1/2. Random numbers come
from a seeded numpy Generator, not Keras's global state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class KerasAugment:
    rotation_range: float = 0.0      # degrees
    width_shift_range: float = 0.0   # fraction of the width
    height_shift_range: float = 0.0  # fraction of the height
    shear_range: float = 0.0         # degrees
    zoom_range: float = 0.0
    horizontal_flip: bool = False
    fill_mode: str = "nearest"       # scipy.ndimage modes: nearest, constant, reflect, wrap
    cval: float = 0.0

    def __post_init__(self) -> None:
        if self.fill_mode not in ("nearest", "constant", "reflect", "wrap"):
            raise ValueError(f"fill_mode {self.fill_mode!r} is not nearest, constant, reflect "
                             "or wrap")
        if min(self.rotation_range, self.width_shift_range, self.height_shift_range,
               self.shear_range, self.zoom_range) < 0:
            raise ValueError("augmentation ranges must be >= 0")

    def draw(self, rng: np.random.Generator, rows: int, cols: int) -> dict[str, float]:
        """One transform's parameters (in the order keras_preprocessing draws them)."""
        return {
            "theta": float(rng.uniform(-self.rotation_range, self.rotation_range))
            if self.rotation_range else 0.0,
            "tx": float(rng.uniform(-self.height_shift_range, self.height_shift_range) * rows)
            if self.height_shift_range else 0.0,
            "ty": float(rng.uniform(-self.width_shift_range, self.width_shift_range) * cols)
            if self.width_shift_range else 0.0,
            "shear": float(rng.uniform(-self.shear_range, self.shear_range))
            if self.shear_range else 0.0,
            **dict(zip(("zx", "zy"),
                       (rng.uniform(1 - self.zoom_range, 1 + self.zoom_range, 2).tolist()
                        if self.zoom_range else [1.0, 1.0]), strict=True)),
            "flip": bool(self.horizontal_flip and rng.random() < 0.5),
        }

    def apply(self, image: np.ndarray, p: dict[str, float]) -> np.ndarray:
        """Transform a C x H x W (or H x W) float image with parameters from :meth:`draw`."""
        img = np.asarray(image, dtype=np.float64)
        squeeze = img.ndim == 2
        if squeeze:
            img = img[None]
        m = transform_matrix(p, img.shape[1], img.shape[2])
        if not np.allclose(m, np.eye(3)):
            img = np.stack([ndimage.affine_transform(ch, m[:2, :2], m[:2, 2], order=1,
                                                     mode=self.fill_mode, cval=self.cval)
                            for ch in img])
        if p["flip"]:
            img = img[:, :, ::-1]
        out = np.ascontiguousarray(img, dtype=np.float32)
        return out[0] if squeeze else out


def transform_matrix(p: dict[str, float], rows: int, cols: int) -> np.ndarray:
    """The 3 x 3 (row, column) homogeneous matrix mapping output to input pixels."""
    m = np.eye(3)
    if p["theta"]:
        t = np.deg2rad(p["theta"])
        m = m @ np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    if p["tx"] or p["ty"]:
        m = m @ np.array([[1, 0, p["tx"]], [0, 1, p["ty"]], [0, 0, 1]])
    if p["shear"]:
        s = np.deg2rad(p["shear"])
        m = m @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    if p["zx"] != 1 or p["zy"] != 1:
        m = m @ np.array([[p["zx"], 0, 0], [0, p["zy"], 0], [0, 0, 1]])
    if np.allclose(m, np.eye(3)):
        return m
    ox, oy = rows / 2 + 0.5, cols / 2 + 0.5
    offset = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]])
    reset = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    return offset @ m @ reset
