"""Synthetic ChestX-ray14 collection in the published layout (`medtl.studies.boit2019.reader`):
chest-radiograph-like PNGs in images_001/, images_002/ ..., Data_Entry_2017.csv (or the
2020 revision's file name), BBox_List_2017.csv and the patient-level train_val_list.txt /
test_list.txt.

An image: dark air, a soft-tissue body, two dark lungs with vessel texture crossed by bright
ribs, a bright heart and mediastinum, the diaphragm. About half the images show no finding;
the others one or two of the 14, each drawn visibly (an enlarged heart, a basal effusion, a
bright mass or nodule, a dark pneumothorax, hazy opacities ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medtl.io import atomic_dir
from medtl.studies.boit2019.reader import (
    BBOX_LIST,
    DATA_ENTRY_2017,
    DATA_ENTRY_2020,
    FINDINGS,
    TEST_LIST,
    TRAIN_VAL_LIST,
)

HEADER_2017 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
               "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
BOXED = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
         "Pneumonia", "Pneumothorax")   # the eight findings BBox_List_2017 covers


@dataclass(frozen=True)
class ImageTruth:
    image: str
    patient: int
    findings: tuple[str, ...]
    box: tuple[str, tuple[float, float, float, float]] | None   # finding, x y w h


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def chest_image(rng: np.random.Generator, size: int, findings: tuple[str, ...]
                ) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """(size x size uint8 radiograph, box of its first boxed finding or None)."""
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(float)
    img = np.full((s, s), 15.0)
    img[_ellipse(yy, xx, 0.55 * s, 0.5 * s, 0.55 * s, 0.46 * s)] = 125.0
    lungs = []
    for side in (-1, 1):
        cx = 0.5 * s + side * 0.19 * s
        rx, ry = 0.14 * s, 0.3 * s
        if "Emphysema" in findings:
            rx, ry = rx * 1.12, ry * 1.08
        mask = _ellipse(yy, xx, 0.47 * s, cx, ry, rx)
        lungs.append((mask, cx, rx, ry))
        texture = ndimage.gaussian_filter(rng.normal(0, 1, (s, s)), s / 160) * 14
        level = 30.0 if "Emphysema" in findings else 48.0
        img[mask] = level + texture[mask]
    for k in range(7):                        # ribs: bright arcs across the lungs
        y0 = 0.2 * s + k * 0.085 * s
        arc = y0 + 0.06 * s * ((xx - 0.5 * s) / (0.5 * s)) ** 2
        img += 22 * np.exp(-((yy - arc) / (0.012 * s)) ** 2) * (np.abs(xx - 0.5 * s) > 0.05 * s)
    heart = 1.45 if "Cardiomegaly" in findings else 1.0
    img[_ellipse(yy, xx, 0.62 * s, 0.53 * s, 0.13 * s * heart, 0.13 * s * heart)] = 175.0
    img[(np.abs(xx - 0.5 * s) < 0.06 * s) & (yy < 0.6 * s)] = 165.0      # mediastinum
    img[yy > 0.78 * s + 0.04 * s * np.cos((xx - 0.5 * s) / s * 6)] = 160.0  # diaphragm
    box = None
    mask, cx, rx, ry = lungs[int(rng.integers(0, 2))]
    inside = np.argwhere(mask)
    for f in findings:
        cy0, cx0 = inside[rng.integers(len(inside))].astype(float)
        b = None
        if f in ("Mass", "Nodule", "Hernia"):
            r = (0.07 if f == "Mass" else 0.025) * s
            if f == "Hernia":
                cy0, cx0, r = 0.82 * s, 0.5 * s, 0.06 * s
            img[_ellipse(yy, xx, cy0, cx0, r, r)] = 185.0
            b = (cx0 - r, cy0 - r, 2 * r, 2 * r)
        elif f == "Effusion":
            level = 0.47 * s + ry * 0.45
            fill = mask & (yy > level - 0.03 * s * np.cos((xx - cx) / rx * 1.5))
            img[fill] = 150.0
            b = (cx - rx, level - 0.03 * s, 2 * rx, 0.47 * s + ry - level)
        elif f == "Pneumothorax":
            edge = mask & (np.abs(xx - cx) > 0.55 * rx) & (yy < 0.5 * s)
            img[edge] = 8.0
            b = (cx - rx, 0.47 * s - ry, 2 * rx, 0.5 * s - (0.47 * s - ry))
        elif f in ("Pleural_Thickening", "Fibrosis"):
            ring = mask & ~ndimage.binary_erosion(mask, iterations=max(1, s // 60))
            img[ring if f == "Pleural_Thickening" else mask] += 45 if f == "Pleural_Thickening" \
                else (ndimage.gaussian_filter(rng.normal(0, 1, (s, s)), 0.8)[mask] > 0.3) * 40
        elif f != "Cardiomegaly" and f != "Emphysema":
            # hazy opacity: atelectasis, consolidation, edema, infiltration, pneumonia
            r = 0.09 * s
            haze = np.exp(-(((yy - cy0) ** 2 + (xx - cx0) ** 2) / (2 * r ** 2)))
            img += 70 * haze * mask
            b = (cx0 - 1.5 * r, cy0 - 1.5 * r, 3 * r, 3 * r)
        if f == "Cardiomegaly":
            rr = 0.13 * s * heart
            b = (0.53 * s - rr, 0.62 * s - rr, 2 * rr, 2 * rr)
        if box is None and b is not None and f in BOXED:
            box = b
    img = ndimage.gaussian_filter(img, s / 400) + rng.normal(0, 4, (s, s))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), box


def _findings(rng: np.random.Generator, healthy: float) -> tuple[str, ...]:
    if rng.random() < healthy:
        return ()
    n = 1 if rng.random() < 0.7 else 2
    picked = set(rng.choice(len(FINDINGS), n, replace=False).tolist())
    return tuple(f for i, f in enumerate(FINDINGS) if i in picked)


def write_chestxray14_collection(dest: Path, *, patients: int = 20,
                                 max_images_per_patient: int = 3, size: int = 256,
                                 test_fraction: float = 0.3, per_folder: int = 40,
                                 healthy: float = 0.5, revision: str = "2017",
                                 nested: bool = False, seed: int = 0) -> list[ImageTruth]:
    """The collection at `dest` (atomically); returns every image's truth.

    `nested` puts the PNGs in images_NNN/images/ as the NIH tarballs unpack."""
    if revision not in ("2017", "2020"):
        raise ValueError("revision must be 2017 or 2020")
    rng = np.random.default_rng([seed, 6])
    truths: list[ImageTruth] = []
    entry_lines = [HEADER_2017 if revision == "2017" else HEADER_2017.rstrip(",")]
    bbox_lines = [BBOX_HEADER]
    pids = list(range(1, patients + 1))
    n_test = max(1, round(test_fraction * patients))
    test_pids = set(rng.permutation(pids)[:n_test].tolist())
    lists: dict[str, list[str]] = {"train_val": [], "test": []}
    with atomic_dir(Path(dest)) as tmp:
        count = 0
        for pid in pids:
            for k in range(int(rng.integers(1, max_images_per_patient + 1))):
                findings = _findings(rng, healthy)
                img, box = chest_image(rng, size, findings)
                name = f"{pid:08d}_{k:03d}.png"
                folder = tmp / f"images_{count // per_folder + 1:03d}"
                if nested:
                    folder = folder / "images"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(folder / name)
                count += 1
                labels = "|".join(findings) or "No Finding"
                view = "PA" if rng.random() < 0.6 else "AP"
                line = (f"{name},{labels},{k},{pid},{int(rng.integers(18, 90))},"
                        f"{'M' if rng.random() < 0.55 else 'F'},{view},{size},{size},"
                        "0.143,0.143")
                entry_lines.append(line + ("," if revision == "2017" else ""))
                boxed = None
                if box is not None:
                    finding = next(f for f in findings if f in BOXED)
                    name_in_list = "Infiltrate" if finding == "Infiltration" else finding
                    bbox_lines.append(f"{name},{name_in_list},{box[0]:.4f},{box[1]:.4f},"
                                      f"{box[2]:.4f},{box[3]:.4f},,,")
                    boxed = (finding, box)
                lists["test" if pid in test_pids else "train_val"].append(name)
                truths.append(ImageTruth(name, pid, findings, boxed))
        entry_name = DATA_ENTRY_2017 if revision == "2017" else DATA_ENTRY_2020
        (tmp / entry_name).write_text("\n".join(entry_lines) + "\n")
        (tmp / BBOX_LIST).write_text("\n".join(bbox_lines) + "\n")
        (tmp / TRAIN_VAL_LIST).write_text("\n".join(lists["train_val"]) + "\n")
        (tmp / TEST_LIST).write_text("\n".join(lists["test"]) + "\n")
    return truths
