"""Synthetic ILD database in the distributed layout (see `medtl.studies.shin2016.ild.reader`).

Each patient folder holds a few axial HRCT-like slices (`CT-XXXX-YYYY.dcm`, 10 mm apart)
with a body, two lungs of textured parenchyma and vessels, and ROI polygons (ROI text file in
mm) filled with one of the six textures: healthy (NM), emphysema (EM: low-attenuation holes),
ground glass (GG: hazy increase), fibrosis (FB: reticulation and honeycomb cysts),
micronodules (MN: small dense dots), consolidation (CD: dense with air bronchograms). Some
slices carry two ROIs of different classes (multi-label slices). Texture strength and the
parenchyma level vary per patient, so healthy vs faint ground glass and fibrosis vs
micronodules are not trivially separable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from scipy import ndimage
from skimage.draw import polygon as fill_polygon

from medtl.config import option
from medtl.datasets.formats.dicom import write_ct_series
from medtl.datasets.formats.geometry import Geometry
from medtl.io import atomic_dir
from medtl.studies.shin2016.ild.reader import SIX_CLASSES

SLICE_GAP_MM = 10.0


@dataclass(frozen=True)
class IldPhantoms:
    """Settings of the kit's synthetic ILD database (`write_collection`'s keywords), as a
    spec's `dataset.phantom` gives them."""

    patients: int = option(6, "patient folders (one leave-one-out fold each)", minimum=2)
    slices_per_patient: int = option(4, "annotated axial slices per patient, 10 mm apart",
                                     minimum=1)
    size: int = option(512, "slice side in pixels", minimum=16)
    spacing_mm: float | None = option(None, "pixel spacing (mm); none: a 360 mm field of "
                                            "view over `size` pixels",
                                      minimum=0, exclusive_minimum=True)
    seed: int = option(0, "seed of the anatomy, textures and ROIs", minimum=0)
    multi_label_rate: float = option(0.35, "chance that a slice carries a second ROI of "
                                           "another class", minimum=0, maximum=1)


@dataclass
class RoiTruth:
    label: str
    slice_number: int
    polygon_px: np.ndarray   # (n, 2) x, y


def _lungs(size: int) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    c = size / 2
    ellipses = [(c - 0.2 * size, c, 0.15 * size, 0.27 * size),
                (c + 0.2 * size, c, 0.15 * size, 0.27 * size)]
    mask = np.zeros((size, size), bool)
    for ex, ey, ax, ay in ellipses:
        mask |= ((xx - ex) / ax) ** 2 + ((yy - ey) / ay) ** 2 < 1
    return mask, ellipses


def _roi_polygon(rng, ellipse, size: int) -> np.ndarray:
    ex, ey, ax, ay = ellipse
    cx = ex + rng.uniform(-0.2, 0.2) * ax
    cy = ey + rng.uniform(-0.4, 0.4) * ay
    rx, ry = rng.uniform(0.55, 0.8) * ax, rng.uniform(0.3, 0.5) * ay
    n = int(rng.integers(12, 24))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    jitter = rng.uniform(0.85, 1.1, n)
    pts = np.stack([cx + rx * jitter * np.cos(ang), cy + ry * jitter * np.sin(ang)], 1)
    # keep inside the lung ellipse
    rel = (pts - [ex, ey]) / [ax, ay]
    norm = np.maximum(np.linalg.norm(rel, axis=1) / 0.95, 1.0)
    return np.array([ex, ey]) + rel / norm[:, None] * [ax, ay]


def _texture(rng, label: str, shape, strength: float) -> tuple[np.ndarray, str]:
    """HU field to paint inside an ROI ('set' replaces, 'add' adds)."""
    h, w = shape
    if label == "healthy":
        return np.zeros(shape, np.float32), "add"
    if label == "emphysema":
        out = np.zeros(shape, np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(int(h * w / 120)):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, 5)
            out[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = -130 * strength
        return out, "add"
    if label == "ground_glass":
        haze = ndimage.gaussian_filter(rng.normal(0, 1, shape), 4) * 60
        return (250 * strength + haze).astype(np.float32), "add"
    if label == "fibrosis":
        band = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.8)
        lines = np.abs(band) < 0.04
        out = np.where(lines, 520 * strength, 80 * strength).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(int(h * w / 400)):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 4)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            out[np.abs(d - r) < 0.8] = 600 * strength
            out[d < r - 0.8] = -120
        return out, "add"
    if label == "micronodules":
        out = np.zeros(shape, np.float32)
        ys, xs = rng.uniform(0, h, int(h * w / 45)), rng.uniform(0, w, int(h * w / 45))
        out[ys.astype(int), xs.astype(int)] = 1.0
        out = ndimage.gaussian_filter(out, 0.9) * 4000 * strength
        return out.astype(np.float32), "add"
    if label == "consolidation":
        base = np.full(shape, 20.0, np.float32) + rng.normal(0, 15, shape).astype(np.float32)
        band = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3)
        base[np.abs(band) < 0.015] = -800
        return base, "set"
    raise ValueError(f"no phantom texture for label {label!r}")


def make_slice(rng, size: int, rois: list[tuple[str, np.ndarray]], level: float,
               strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    c = size / 2
    body = ((xx - c) / (0.46 * size)) ** 2 + ((yy - c) / (0.36 * size)) ** 2
    hu = np.full((size, size), -1000.0, np.float32)
    hu[body < 1] = 40
    hu[(body < 1) & (body > 0.85)] = -100
    lungs, _ = _lungs(size)
    parenchyma = level + ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 2) * 60
    hu[lungs] = parenchyma[lungs]
    vessels = np.zeros((size, size), np.float32)
    pts = rng.uniform(0, size, (int(size * size / 500), 2)).astype(int)
    vessels[pts[:, 0], pts[:, 1]] = 1
    vessels = ndimage.gaussian_filter(vessels, 1.2) * 5000
    hu[lungs] += vessels[lungs]
    for label, poly in rois:
        mask = np.zeros((size, size), bool)
        rr, cc = fill_polygon(poly[:, 1], poly[:, 0], (size, size))
        mask[rr, cc] = True
        field, mode = _texture(rng, label, (size, size), strength)
        if mode == "set":
            hu[mask] = field[mask]
        else:
            hu[mask] += field[mask]
    hu = ndimage.gaussian_filter(hu, 0.5) + rng.normal(0, 20, (size, size))
    return np.clip(hu, -1024, 3071).astype(np.float32)


def write_roi_file(path: Path, rois: list[RoiTruth], spacing: float, study: str,
                   series: str) -> None:
    lines = [f"Study: {study}", f"Series: {series}", f"SpacingX: {spacing:.6f}",
             f"SpacingY: {spacing:.6f}", f"SpacingZ: {SLICE_GAP_MM:.1f}"]
    for label in dict.fromkeys(r.label for r in rois):
        lines.append(f"label: {label}")
        for r in (r for r in rois if r.label == label):
            lines.append(f"slice_number: {r.slice_number}")
            lines.append(f"nb_points_on_contour: {len(r.polygon_px)}")
            lines.extend(f"{x * spacing:.4f} {y * spacing:.4f}" for x, y in r.polygon_px)
    Path(path).write_text("\n".join(lines) + "\n")


def write_collection(dest: Path, *, patients: int = 6, slices_per_patient: int = 4,
                     size: int = 512, spacing_mm: float | None = None, seed: int = 0,
                     multi_label_rate: float = 0.35, progress=None) -> dict[str, list[RoiTruth]]:
    """Write the phantom database at `dest` (atomically); returns the ROIs by patient."""
    spacing = spacing_mm or 360.0 / size
    truths: dict[str, list[RoiTruth]] = {}
    with atomic_dir(Path(dest)) as tmp:
        numbers = range(1, patients + 1)
        for p in (progress(numbers) if progress else numbers):
            rng = np.random.default_rng([seed, p])
            pid = f"{p:03d}"
            level = rng.uniform(-880, -820)
            strength = rng.uniform(0.6, 1.0)
            _, ellipses = _lungs(size)
            slices, rois = [], []
            for s in range(slices_per_patient):
                first = SIX_CLASSES[(p * 5 + s) % 6]
                labels = [first]
                if rng.random() < multi_label_rate:
                    labels.append(SIX_CLASSES[(SIX_CLASSES.index(first) + rng.integers(1, 6)) % 6])
                drawn = []
                for k, label in enumerate(labels):
                    poly = _roi_polygon(rng, ellipses[k % 2], size)
                    drawn.append((label, poly))
                    rois.append(RoiTruth(label, s + 1, poly))
                slices.append(make_slice(rng, size, drawn, level, strength))
            geometry = Geometry(np.array([-size * spacing / 2, -size * spacing / 2, 0.0]),
                                np.array([spacing, spacing, SLICE_GAP_MM]), np.eye(3),
                                (slices_per_patient, size, size))
            study, series = generate_uid(), generate_uid()
            write_ct_series(tmp / pid, np.stack(slices), geometry, patient_id=pid,
                            study_uid=study, series_uid=series,
                            name_pattern=f"CT-{p:04d}-{{n:04d}}.dcm")
            write_roi_file(tmp / pid / f"CT-{p:04d}-ROIs.txt", rois, spacing, study, series)
            truths[pid] = rois
    return truths
