"""Synthetic data for Tajbakhsh's four applications, in the candidate-manifest format
(data_prep/CANDIDATE_MANIFEST.md), for tests and demos.

- polyp: colonoscopy-like frames (reddish mucosa, folds, vignetting) with dome-shaped polyps,
  their ground-truth masks and candidate boxes (true ones on polyps, false ones elsewhere;
  labels left empty so they derive from the masks, as the paper labels them);
- frames: informative frames (sharp mucosa) and non-informative ones (blurred, wall contact,
  dark), 500 x 350 by default;
- imt: ultrasound-like carotid far walls (dark lumen, gray intima-media, bright adventitia,
  speckle) with an ROI box and the two interfaces traced per column;
- pe: CTPA-like volumes (lungs, contrast-filled vessels, dark emboli inside some) as NIfTI
  files and DICOM series, with candidates at emboli (true) and on clean vessels (false),
  each with its vessel axis.

Every collection is one folder with `candidates.csv` and a train / test split by group.
The settings a spec's `dataset.phantom` may give each writer are the strict classes
`PolypPhantoms`, `PePhantoms`, `FramePhantoms` and `ImtPhantoms` (`PHANTOMS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from medtl.config import option
from medtl.datasets.formats.candidates import MANIFEST, write_candidates
from medtl.datasets.formats.dicom import write_ct_series
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.images import write_nifti
from medtl.io import atomic_dir


def _split(index: int, total: int) -> str:
    """The first half of the groups train, the rest test (at least one of each)."""
    return "train" if index < max(1, total // 2) else "test"


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8)).save(path)


# ------------------------------------------------------------------ colonoscopy

def _mucosa(rng: np.random.Generator, w: int, h: int, sharp: bool = True) -> np.ndarray:
    """H x W x 3 float RGB: reddish mucosa, soft texture, dark folds, vignetting."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    base = np.array([175.0, 85.0, 75.0]) + rng.normal(0, 8, 3)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 2.0) * 18
    img = base[None, None, :] + tex[..., None] * np.array([1.0, 0.6, 0.5])
    for _ in range(rng.integers(2, 5)):        # folds: dark arcs
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.3, 0.8) * max(w, h)
        d = np.abs(np.hypot(xx - cx, yy - cy) - r)
        img -= (np.exp(-(d / rng.uniform(1.5, 3.5)) ** 2) * 60)[..., None]
    if sharp:                                  # thin vessels on the mucosa
        vessels = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 1.0)
        img -= (np.clip(np.abs(vessels) < 0.04, 0, 1) * 25)[..., None] * np.array([0.2, 1, 1])
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    return img * np.clip(1.15 - 0.55 * r ** 2, 0.2, 1.0)[..., None]


def _polyp(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, rx: float,
           ry: float) -> np.ndarray:
    """Draw a dome-shaped, shaded polyp; returns its mask."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(float) + 0.5
    rr = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    mask = rr <= 1.0
    dome = np.sqrt(np.clip(1 - rr, 0, 1))
    shade = np.array([215.0, 120.0, 100.0]) + rng.normal(0, 6, 3)
    edge = np.exp(-((np.sqrt(rr) - 1) / 0.12) ** 2)
    img[:] = np.where(mask[..., None], shade * (0.65 + 0.45 * dome[..., None]), img)
    img -= (edge * 55)[..., None]                       # the shadow that outlines a polyp
    hx, hy = cx - 0.35 * rx, cy - 0.35 * ry             # specular highlight
    img += (np.exp(-(((xx - hx) ** 2 + (yy - hy) ** 2) / (0.15 * rx) ** 2)) * 90)[..., None]
    return mask


def _box_in(w: int, h: int, cx: float, cy: float, bw: float, bh: float) -> tuple[int, ...]:
    x0 = int(np.clip(np.floor(cx - bw / 2), 0, w - 2))
    y0 = int(np.clip(np.floor(cy - bh / 2), 0, h - 2))
    x1 = int(np.clip(np.ceil(cx + bw / 2), x0 + 2, w))
    y1 = int(np.clip(np.ceil(cy + bh / 2), y0 + 2, h))
    return x0, y0, x1, y1


def write_polyp_collection(dest: Path, *, videos: int = 4, frames_per_video: int = 5,
                           size: tuple[int, int] = (128, 96), polyp_rate: float = 0.6,
                           false_per_frame: int = 2, seed: int = 0) -> list[dict[str, Any]]:
    """Frames, masks and `candidates.csv` at `dest` (atomically); returns the rows."""
    w, h = size
    rows: list[dict[str, Any]] = []
    with atomic_dir(Path(dest)) as tmp:
        for v in range(videos):
            rng = np.random.default_rng([seed, 1, v])
            for f in range(frames_per_video):
                img = _mucosa(rng, w, h)
                mask = np.zeros((h, w), bool)
                name = f"video_{v:02d}/frame_{f:03d}.png"
                boxes = []
                if rng.random() < polyp_rate:
                    rx, ry = rng.uniform(0.08, 0.14) * w, rng.uniform(0.08, 0.14) * w
                    cx, cy = rng.uniform(rx + 4, w - rx - 4), rng.uniform(ry + 4, h - ry - 4)
                    mask = _polyp(img, rng, cx, cy, rx, ry)
                    jit = rng.uniform(-0.15, 0.15, 2) * np.array([rx, ry])
                    boxes.append(_box_in(w, h, cx + jit[0], cy + jit[1], 2.2 * rx, 2.2 * ry))
                for _ in range(false_per_frame):
                    for _try in range(50):
                        bw = rng.uniform(0.12, 0.3) * w
                        cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bw / 2, h - bw / 2)
                        if not mask[int(cy), int(cx)]:
                            boxes.append(_box_in(w, h, cx, cy, bw, bw * rng.uniform(0.8, 1.2)))
                            break
                _save_rgb(tmp / "frames" / name, img)
                Image.fromarray(mask.astype(np.uint8) * 255).save(
                    _mkparent(tmp / "masks" / name))
                for k, box in enumerate(boxes):
                    rows.append({"image": f"frames/{name}", "group": f"video_{v:02d}",
                                 "candidate_id": f"v{v:02d}_f{f:03d}_c{k}", "label": "",
                                 "split": _split(v, videos), "x0": box[0], "y0": box[1],
                                 "x1": box[2], "y1": box[3], "mask": f"masks/{name}"})
        write_candidates(tmp / MANIFEST, rows)
    return rows


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_frame_collection(dest: Path, *, videos: int = 4, frames_per_video: int = 8,
                           size: tuple[int, int] = (500, 350), seed: int = 0
                           ) -> list[dict[str, Any]]:
    """Informative / non-informative frames (alternating) and `candidates.csv`."""
    w, h = size
    rows: list[dict[str, Any]] = []
    with atomic_dir(Path(dest)) as tmp:
        for v in range(videos):
            rng = np.random.default_rng([seed, 2, v])
            for f in range(frames_per_video):
                informative = f % 2 == 0
                img = _mucosa(rng, w, h, sharp=informative)
                if not informative:
                    kind = f // 2 % 3
                    if kind == 0:      # motion blur
                        img = ndimage.gaussian_filter(img, (w / 60, w / 25, 0))
                    elif kind == 1:    # wall contact: bright, washed out
                        img = 0.3 * ndimage.gaussian_filter(img, (6, 6, 0)) + np.array(
                            [200.0, 150.0, 140.0])
                    else:              # dark, out of focus
                        img = 0.35 * ndimage.gaussian_filter(img, (4, 4, 0))
                    img += rng.normal(0, 3, img.shape)
                name = f"video_{v:02d}/frame_{f:03d}.png"
                _save_rgb(tmp / "frames" / name, img)
                rows.append({"image": f"frames/{name}", "group": f"video_{v:02d}",
                             "candidate_id": f"v{v:02d}_f{f:03d}",
                             "label": "informative" if informative else "non-informative",
                             "split": _split(v, videos)})
        write_candidates(tmp / MANIFEST, rows)
    return rows


# ------------------------------------------------------------------ carotid ultrasound

def carotid_frame(rng: np.random.Generator, w: int, h: int, li: np.ndarray, ma: np.ndarray
                  ) -> np.ndarray:
    """H x W uint8 far wall: lumen above li(x), intima-media between, adventitia below ma(x);
    multiplicative speckle (li, ma: rows per column, pixel-index coordinates)."""
    rows = np.arange(h, dtype=float)[:, None]
    step = lambda r, at: 1 / (1 + np.exp(-(r - at[None, :]) / 0.6))  # noqa: E731
    img = 15 + 65 * step(rows, li) + 130 * step(rows, ma)
    img += 30 * np.exp(-((rows - li[None, :]) / 1.0) ** 2)      # the bright intima line
    img *= 1 - 0.25 * np.clip((rows - ma[None, :]) / (h / 2), 0, 1)  # depth attenuation
    speckle = rng.rayleigh(1.0, (h, w)) / np.sqrt(np.pi / 2)
    speckle = ndimage.gaussian_filter(speckle, (0.5, 1.2))
    return np.clip(np.rint(img * (0.55 + 0.45 * speckle)), 0, 255).astype(np.uint8)


def write_imt_collection(dest: Path, *, subjects: int = 4, rois_per_subject: int = 3,
                         roi_size: tuple[int, int] = (48, 36),
                         frame_size: tuple[int, int] = (80, 64), seed: int = 0
                         ) -> list[dict[str, Any]]:
    """Ultrasound frames, an ROI each, its interfaces (annotations/) and `candidates.csv`."""
    fw, fh = frame_size
    rw, rh = roi_size
    rows: list[dict[str, Any]] = []
    with atomic_dir(Path(dest)) as tmp:
        for s in range(subjects):
            rng = np.random.default_rng([seed, 3, s])
            for k in range(rois_per_subject):
                x = np.arange(fw, dtype=float)
                li = fh * rng.uniform(0.4, 0.5) + 2.5 * np.sin(x / fw * rng.uniform(2, 5)
                                                             + rng.uniform(0, 6))
                ma = li + rng.uniform(6.0, 9.0) + 0.8 * np.sin(x / fw * 3 + rng.uniform(0, 6))
                img = carotid_frame(rng, fw, fh, li, ma)
                x0 = int(rng.integers(0, fw - rw + 1))
                y0 = int(np.clip(round(float(li[x0:x0 + rw].mean()) - rh * 0.4), 0, fh - rh))
                name = f"subject_{s:02d}/roi_{k}"
                path = _mkparent(tmp / "frames" / f"{name}.png")
                Image.fromarray(img).save(path)
                ann = _mkparent(tmp / "annotations" / f"{name}.csv")
                lines = ["x,lumen_intima,media_adventitia"]
                lines += [f"{c},{li[x0 + c] - y0:.3f},{ma[x0 + c] - y0:.3f}" for c in range(rw)]
                ann.write_text("\n".join(lines) + "\n")
                rows.append({"image": f"frames/{name}.png", "group": f"subject_{s:02d}",
                             "candidate_id": f"s{s:02d}_roi{k}", "split": _split(s, subjects),
                             "x0": x0, "y0": y0, "x1": x0 + rw, "y1": y0 + rh,
                             "annotation": f"annotations/{name}.csv"})
        write_candidates(tmp / MANIFEST, rows)
    return rows


# ------------------------------------------------------------------ CTPA

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _line_distance(q: np.ndarray, p0: np.ndarray, d: np.ndarray) -> float:
    rel = q - p0
    return float(np.linalg.norm(rel - (rel @ d) * d))


def _free_line(rng: np.random.Generator, centre: np.ndarray, extent: np.ndarray,
               lines: list[tuple[np.ndarray, np.ndarray]], points: list[np.ndarray],
               clearance: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """A vessel (direction, point) whose point is `clearance` mm from earlier vessels and
    which passes that far from earlier candidates (best of many tries)."""
    best, best_gap = None, -1.0
    for _ in range(200):
        d = _unit(rng.normal(size=3))
        p0 = centre + rng.uniform(-0.3, 0.3, 3) * extent
        gap = min([_line_distance(p0, q, e) for q, e in lines]
                  + [_line_distance(q, p0, d) for q in points] + [np.inf])
        if gap >= clearance:
            return d, p0
        if gap > best_gap:
            best, best_gap = (d, p0), gap
    return best


def write_pe_collection(dest: Path, *, patients: int = 4,
                        shape: tuple[int, int, int] = (28, 40, 40),
                        spacing: tuple[float, float, float] = (0.8, 0.8, 1.0),
                        vessels: int = 4, emboli: int = 2, dicom_every: int = 2, seed: int = 0
                        ) -> list[dict[str, Any]]:
    """CTPA-like volumes (NIfTI, every `dicom_every`-th patient a DICOM series) and
    `candidates.csv`: a true candidate at each embolus, false ones on clean vessel segments
    and in the lung, each with its vessel axis."""
    rows: list[dict[str, Any]] = []
    with atomic_dir(Path(dest)) as tmp:
        for p in range(patients):
            rng = np.random.default_rng([seed, 4, p])
            origin = np.array([-20.0, -18.0, -60.0]) + rng.uniform(-5, 5, 3)
            g = Geometry(origin, np.array(spacing, float), np.eye(3), shape)
            k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
            world = g.index_to_world(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*shape, 3)
            centre = g.index_to_world((np.array(shape[::-1]) - 1) / 2)
            hu = np.full(shape, -850.0)
            body = np.abs(world[..., 0] - centre[0]) > 0.42 * shape[2] * spacing[0]
            hu[body] = 40.0
            pid = f"patient_{p:02d}"
            cands: list[tuple[np.ndarray, np.ndarray, str]] = []
            lines: list[tuple[np.ndarray, np.ndarray]] = []
            for n in range(vessels):
                d, p0 = _free_line(rng, centre, g.extent_mm(), lines, [c[0] for c in cands])
                lines.append((p0, d))
                r = rng.uniform(1.8, 2.6)
                rel = world - p0
                along = rel @ d
                dist = np.linalg.norm(rel - along[..., None] * d, axis=-1)
                hu[dist <= r] = 350.0
                if n < emboli:
                    s0 = rng.uniform(-1.5, 1.5)
                    clot = (dist <= 0.8 * r) & (np.abs(along - s0) <= 3.0)
                    hu[clot] = 45.0
                    cands.append((p0 + s0 * d, d, "pe"))
                else:
                    cands.append((p0 + rng.uniform(-1.5, 1.5) * d, d, "non-pe"))
            for _ in range(2):  # in the lung, random axis
                q = centre + rng.uniform(-0.25, 0.25, 3) * g.extent_mm()
                cands.append((q, _unit(rng.normal(size=3)), "non-pe"))
            hu = ndimage.gaussian_filter(hu, 0.6) + rng.normal(0, 12, shape)
            if dicom_every and p % dicom_every == 1:
                image = f"volumes/{pid}"
                write_ct_series(tmp / image, hu.astype(np.float32), g, patient_id=pid)
            else:
                image = f"volumes/{pid}.nii.gz"
                write_nifti(_mkparent(tmp / image), np.rint(hu), g)
            for n, (c, d, label) in enumerate(cands):
                rows.append({"image": image, "group": pid, "candidate_id": f"{pid}_c{n}",
                             "label": label, "split": _split(p, patients),
                             "cx": f"{c[0]:.3f}", "cy": f"{c[1]:.3f}", "cz": f"{c[2]:.3f}",
                             "ax": f"{d[0]:.5f}", "ay": f"{d[1]:.5f}", "az": f"{d[2]:.5f}"})
        write_candidates(tmp / MANIFEST, rows)
    return rows


# ------------------------------------------------------------------ settings of a spec

@dataclass(frozen=True)
class PolypPhantoms:
    """`dataset.phantom` of `tajbakhsh_polyp`: the keywords of write_polyp_collection."""

    videos: int = option(4, "videos (groups); the first half train, the rest test", minimum=2)
    frames_per_video: int = option(5, "frames per video", minimum=1)
    size: tuple[int, int] = option((128, 96), "frame size (width, height), pixels", minimum=16)
    polyp_rate: float = option(0.6, "share of frames showing a polyp", minimum=0, maximum=1)
    false_per_frame: int = option(2, "false candidate boxes per frame", minimum=0)
    seed: int = option(0, "seed of the frames, polyps and candidates", minimum=0)


@dataclass(frozen=True)
class FramePhantoms:
    """`dataset.phantom` of `tajbakhsh_frame`: the keywords of write_frame_collection."""

    videos: int = option(4, "videos (groups); the first half train, the rest test", minimum=2)
    frames_per_video: int = option(8, "frames per video, informative and non-informative in "
                                      "turn", minimum=2)
    size: tuple[int, int] = option((500, 350), "frame size (width, height), pixels",
                                   minimum=16)
    seed: int = option(0, "seed of the frames", minimum=0)


@dataclass(frozen=True)
class ImtPhantoms:
    """`dataset.phantom` of `tajbakhsh_imt`: the keywords of write_imt_collection."""

    subjects: int = option(4, "subjects (groups); the first half train, the rest test",
                           minimum=2)
    rois_per_subject: int = option(3, "ROIs (frames) per subject", minimum=1)
    roi_size: tuple[int, int] = option((48, 36), "ROI size (width, height), pixels", minimum=2)
    frame_size: tuple[int, int] = option((80, 64), "frame size (width, height), pixels; at "
                                                   "least the ROI's", minimum=2)
    seed: int = option(0, "seed of the walls, speckle and ROIs", minimum=0)

    def __post_init__(self) -> None:
        if any(f < r for f, r in zip(self.frame_size, self.roi_size, strict=True)):
            raise ValueError(f"frame_size {list(self.frame_size)} is smaller than roi_size "
                             f"{list(self.roi_size)}")


@dataclass(frozen=True)
class PePhantoms:
    """`dataset.phantom` of `tajbakhsh_pe`: the keywords of write_pe_collection."""

    patients: int = option(4, "patients (volumes); the first half train, the rest test",
                           minimum=2)
    shape: tuple[int, int, int] = option((28, 40, 40), "volume size (slices, rows, columns)",
                                         minimum=8)
    spacing: tuple[float, float, float] = option(
        (0.8, 0.8, 1.0), "voxel spacing (mm): columns, rows, slices", minimum=0,
        exclusive_minimum=True)
    vessels: int = option(4, "contrast-filled vessels per volume", minimum=1)
    emboli: int = option(2, "vessels holding an embolus (a true candidate each); the others "
                            "give false candidates", minimum=0)
    dicom_every: int = option(2, "every n-th patient written as a DICOM series, the others "
                                 "as NIfTI (0: all NIfTI)", minimum=0)
    seed: int = option(0, "seed of the anatomy, emboli and candidates", minimum=0)


Writer = Callable[..., list[dict[str, Any]]]
# application -> (its `dataset.phantom` settings, the writer they are the keywords of)
PHANTOMS: dict[str, tuple[type, Writer]] = {
    "polyp": (PolypPhantoms, write_polyp_collection),
    "pe": (PePhantoms, write_pe_collection),
    "frames": (FramePhantoms, write_frame_collection),
    "imt": (ImtPhantoms, write_imt_collection),
}
