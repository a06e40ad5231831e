"""Small synthetic image sets for the demo and the tool-chain tests.

`blob_images`: class 1 holds a faint Gaussian blob at a random position on textured noise,
class 0 is texture alone. A small CNN learns it in a few hundred iterations, not perfectly.
"""

from __future__ import annotations

import numpy as np


def blob_images(n: int, size: int = 32, seed: int = 0, contrast: float = 30.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 n x 3 x size x size, labels int n), half of each class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        noise = rng.normal(0, 1, (3, size // 4, size // 4)).astype(np.float32)
        coarse = np.kron(noise, np.ones((4, 4), np.float32)) * 12
        img = 110 + coarse + rng.normal(0, 10, (3, size, size))
        if labels[i]:
            cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
            r = rng.uniform(size * 0.08, size * 0.16)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img += contrast * blob[None] * rng.uniform(0.6, 1.0, (3, 1, 1))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)
