"""Synthetic kidney ultrasound images in the candidate-manifest format (Ravishankar 2016):
B-mode-like speckle over layered tissue, a kidney drawn as an ellipse with a bright capsule,
a darker cortex and an echogenic central sinus, and its bounding box in `candidates.csv`
(label `kidney`, group = subject, split by subject)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from medtl.datasets.formats.candidates import MANIFEST, write_candidates
from medtl.io import atomic_dir


def kidney_image(rng: np.random.Generator, w: int, h: int
                 ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(H x W uint8 image, kidney box x0 y0 x1 y1)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float) + 0.5
    tissue = 70 + 25 * np.sin(yy / h * rng.uniform(4, 9) + rng.uniform(0, 6))
    tissue += ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 3) * 20
    a, b = rng.uniform(0.22, 0.32) * w, rng.uniform(0.16, 0.24) * h
    cx, cy = rng.uniform(a + 2, w - a - 2), rng.uniform(b + 2, h - b - 2)
    t = rng.uniform(-0.35, 0.35)
    u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
    v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
    r = np.sqrt(u ** 2 + v ** 2)
    img = np.where(r < 1, 45.0, tissue)                                   # cortex
    img += 110 * np.exp(-((r - 1) / 0.06) ** 2)                           # capsule
    img = np.where(np.sqrt((u / 0.55) ** 2 + (v / 0.35) ** 2) < 1, 150.0, img)  # sinus
    speckle = ndimage.gaussian_filter(rng.rayleigh(1.0, (h, w)) / np.sqrt(np.pi / 2), 0.7)
    img = np.clip(np.rint(img * (0.5 + 0.5 * speckle)), 0, 255).astype(np.uint8)
    # the rotated ellipse's axis-aligned bounding box
    hx = np.sqrt((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2)
    hy = np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2)
    box = (int(np.floor(cx - hx)), int(np.floor(cy - hy)), int(np.ceil(cx + hx)),
           int(np.ceil(cy + hy)))
    box = (max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h))
    return img, box


def write_kidney_collection(dest: Path, *, subjects: int = 6, images_per_subject: int = 3,
                            size: tuple[int, int] = (160, 120), seed: int = 0
                            ) -> list[dict[str, Any]]:
    """Images and `candidates.csv` at `dest` (atomically); returns the rows."""
    w, h = size
    rows: list[dict[str, Any]] = []
    with atomic_dir(Path(dest)) as tmp:
        for s in range(subjects):
            rng = np.random.default_rng([seed, 5, s])
            for k in range(images_per_subject):
                img, box = kidney_image(rng, w, h)
                name = f"images/subject_{s:02d}/us_{k:02d}.png"
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(tmp / name)
                rows.append({"image": name, "group": f"subject_{s:02d}",
                             "candidate_id": f"s{s:02d}_k{k:02d}", "label": "kidney",
                             "split": "train" if s < max(2, subjects * 2 // 3) else "test",
                             "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]})
        write_candidates(tmp / MANIFEST, rows)
    return rows
