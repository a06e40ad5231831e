"""Tajbakhsh 2016 Sec. VI-D, intima-media boundary segmentation in carotid ultrasound ROIs.

A 3-class problem: a pixel on the lumen-intima interface (1), on the media-adventitia
interface (2), or far from both (0, background). Training patches are centred on such pixels
of the training ROIs, gray repeated to 3 channels, no augmentation; a stratified set of
200,000. At test time the trained net is applied at every ROI pixel (:func:`dense_batches`),
giving two confidence maps (:func:`confidence_maps`) for the scoring code.

Annotation file (the manifest's `annotation` column), one per ROI, CSV:

    x,lumen_intima,media_adventitia
    0,21.4,29.0
    1,21.5,29.2        (an empty cell: that interface is not traced in this column)

`x` is a column of the ROI (0-based), the other two the interface's row in that column, in
ROI pixel indices (row r's centre is r). The ROI is the manifest's box (whole pixels) in the
image, or the whole image. A patch is the patch_px x patch_px window of the image centred on
the pixel (context outside the ROI included, zeros outside the image), resized to 227.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.config import option
from medtl.datasets.channels import gray_notes
from medtl.datasets.formats.candidates import Candidate, CandidateError, Schema
from medtl.datasets.formats.images import image_size, read_gray
from medtl.datasets.formats.resize import resize_matrix
from medtl.datasets.formats.table import finite
from medtl.datasets.manifest import read_manifest
from medtl.provenance import assumed, paper
from medtl.studies.tajbakhsh2016.dataset import TajbakhshConfig

SEC = "Tajbakhsh 2016 Sec. VI-D"
GRAY_SOURCE = (f"{SEC}: 'each extracted gray-scale patch was converted to a color patch by "
               "repeating the gray channel thrice'")
CLASSES = ("background", "lumen-intima", "media-adventitia")
SCHEMA = Schema("imt", CLASSES, geometry="roi", label="optional", annotation=True,
                aliases={"roi": 0})
ANNOTATION_HEADER = ("x", "lumen_intima", "media_adventitia")
TEST_ROIS_CSV = "test_rois.csv"
TEST_INTERFACES = "test_interfaces"


@dataclass(frozen=True)
class ImtConfig(TajbakhshConfig):
    train_patches: int = option(200_000, "stratified training patches (training + validation)",
                                paper(200_000, f"{SEC}: 'a stratified set of 200,000 training "
                                      "patches'"))
    single_group: bool = option(True, "also build a training set from one subject only",
                                paper(True, f"{SEC}: 'reducing the training patches to a single"
                                      " patient'"))
    reduced_patches: str = option(
        "same", "patches of a reduced training set: scale or same",
        assumed("same", f"{SEC}: one patient's ~12 ROIs still give 'a large number of distinct "
                "training patches'"), choices=("scale", "same"))
    patch_px: int = option(32, "side of the image window around a pixel, before resizing",
                           assumed(32, "not given; a window a few intima-media thicknesses "
                                   "wide"))
    interface_halfwidth_px: int = option(
        2, "rows within this distance of a traced interface are that interface's pixels",
        assumed(2, "not given; one pixel per column (276 ROIs of ~92 columns) is far below "
                "200,000 / 3 patches per class, a 5-row band reaches it"))
    background_min_distance_px: float = option(
        5.0, "background pixels lie farther than this (rows) from both interfaces",
        assumed(5.0, f"{SEC}: background patches come from locations 'far from' the "
                "interfaces; the distance is not given"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_px < 2:
            raise ValueError("patch_px must be at least 2")
        if self.interface_halfwidth_px < 0:
            raise ValueError("interface_halfwidth_px must be >= 0")
        if self.background_min_distance_px <= self.interface_halfwidth_px:
            raise ValueError("background_min_distance_px must exceed interface_halfwidth_px")


@dataclass(frozen=True)
class Interfaces:
    """Per ROI column: the two interfaces' rows (NaN where not traced)."""

    lumen_intima: np.ndarray
    media_adventitia: np.ndarray


def _rows(cells: list[str], where: str, height: int | None) -> list[float]:
    """The two interface rows of a column (NaN for an empty cell), inside the ROI's rows."""
    values = []
    for name, cell in zip(ANNOTATION_HEADER[1:], cells, strict=True):
        if not cell.strip():
            values.append(math.nan)
            continue
        value = finite(cell, where, f"{name} row", CandidateError)
        # row r covers [r - 0.5, r + 0.5): a trace outside the ROI's rows is in other units
        if height is not None and not -0.5 <= value <= height - 0.5:
            raise CandidateError(f"{where}: {name} row {value:g} outside the ROI (rows 0.."
                                 f"{height - 1}, ROI pixel indices)")
        values.append(value)
    return values


def read_interfaces(path: Path, width: int, where: str = "", height: int | None = None
                    ) -> Interfaces:
    """An annotation file, checked against the ROI width (and height, when given); errors
    name file and line."""
    prefix = f"{where}: " if where else ""
    try:
        rows = list(csv.reader(Path(path).read_text(encoding="utf-8-sig").splitlines()))
    except OSError as exc:
        raise CandidateError(f"{prefix}annotation {path} cannot be read ({exc.strerror})"
                             ) from None
    except UnicodeDecodeError:
        raise CandidateError(f"{path}: not a UTF-8 text file") from None
    if not rows or tuple(c.strip() for c in rows[0]) != ANNOTATION_HEADER:
        raise CandidateError(f"{path}:1: header must be {','.join(ANNOTATION_HEADER)}")
    li = np.full(width, np.nan)
    ma = np.full(width, np.nan)
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 3:
            raise CandidateError(f"{path}:{n}: expected 3 columns, got {len(row)}")
        try:
            x = int(row[0])
        except ValueError:
            raise CandidateError(f"{path}:{n}: x {row[0].strip()!r} must be an integer (a "
                                 "column of the ROI)") from None
        values = _rows(row[1:], f"{path}:{n}", height)
        if not 0 <= x < width:
            raise CandidateError(f"{path}:{n}: column {x} outside the ROI (0..{width - 1})")
        if not math.isnan(li[x]) or not math.isnan(ma[x]):
            raise CandidateError(f"{path}:{n}: column {x} given twice")
        li[x], ma[x] = values
    if not np.any(np.isfinite(li) & np.isfinite(ma)):
        raise CandidateError(f"{path}: no column with both interfaces traced")
    return Interfaces(li, ma)


def roi_box(cand: Candidate, size: tuple[int, int]) -> tuple[int, int, int, int]:
    if cand.box is None:
        return 0, 0, size[0], size[1]
    return tuple(int(v) for v in cand.box)


def class_positions(inter: Interfaces, height: int, halfwidth: int, far: float
                    ) -> list[np.ndarray]:
    """(row, col) ROI pixels of each class, in a fixed order (column-major)."""
    out: list[list[tuple[int, int]]] = [[], [], []]
    rows = np.arange(height)
    for x in range(len(inter.lumen_intima)):
        li, ma = inter.lumen_intima[x], inter.media_adventitia[x]
        d_li = np.abs(rows - li) if np.isfinite(li) else np.full(height, np.inf)
        d_ma = np.abs(rows - ma) if np.isfinite(ma) else np.full(height, np.inf)
        for cls, mine, other, centre in ((1, d_li, d_ma, li), (2, d_ma, d_li, ma)):
            if not np.isfinite(centre):
                continue
            c = int(np.floor(centre + 0.5))
            for r in range(c - halfwidth, c + halfwidth + 1):
                if 0 <= r < height and mine[r] <= other[r]:
                    out[cls].append((r, x))
        if np.isfinite(li) and np.isfinite(ma):
            out[0].extend((int(r), x) for r in rows[(d_li > far) & (d_ma > far)])
    return [np.array(p, dtype=np.int64).reshape(-1, 2) for p in out]


def windows(gray: np.ndarray, centres: np.ndarray, patch_px: int, size: int) -> np.ndarray:
    """n x 3 x size x size uint8 patches: the patch_px window centred on each (row, col)
    pixel of `gray` (zeros outside), resized (bilinear up / area down), gray repeated."""
    half = patch_px // 2
    # window rows r - half + (0 .. patch_px-1) hold the pixel at index `half`, the centre
    # of an odd window and the pixel just past the centre of an even one
    padded = np.pad(gray, patch_px, mode="constant")
    r0 = centres[:, 0] - half + patch_px
    c0 = centres[:, 1] - half + patch_px
    offs = np.arange(patch_px)
    win = padded[(r0[:, None, None] + offs[None, :, None]),
                 (c0[:, None, None] + offs[None, None, :])].astype(np.float64)
    if patch_px == size:
        out = win
    else:
        m = resize_matrix(size, patch_px)
        out = np.einsum("op,npq,rq->nor", m, win, m, optimize=True)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(out[:, None], (len(out), 3, size, size)))


class ImtApp:
    name = "imt"
    classes = CLASSES
    schema = SCHEMA
    test_columns = ()

    def __init__(self, cfg: ImtConfig) -> None:
        self.cfg = cfg
        self._positions: dict[str, list[np.ndarray]] = {}
        self._boxes: dict[str, tuple[int, int, int, int]] = {}

    def check(self, cands: list[Candidate]) -> list[Candidate]:
        sizes: dict[Path, tuple[int, int]] = {}
        for c in cands:
            if c.image not in sizes:
                sizes[c.image] = image_size(c.image)
            x0, y0, x1, y1 = roi_box(c, sizes[c.image])
            if not c.annotation.is_file():
                raise CandidateError(f"{c.where}: annotation {c.annotation} does not exist")
            inter = read_interfaces(c.annotation, x1 - x0, c.where, y1 - y0)
            self._boxes[c.candidate_id] = (x0, y0, x1, y1)
            self._positions[c.candidate_id] = class_positions(
                inter, y1 - y0, self.cfg.interface_halfwidth_px,
                self.cfg.background_min_distance_px)
        return cands

    def pools(self, cand: Candidate) -> tuple[int, ...]:
        return tuple(len(p) for p in self._positions[cand.candidate_id])

    def test_count(self, cand: Candidate) -> int:
        return 0  # test ROIs are scored densely (test_rois.csv, dense_batches)

    def load(self, image: Path, jobs) -> np.ndarray:
        return read_gray(image)

    def render(self, gray: np.ndarray, cand: Candidate, stream: str, cls: int,
               indices: np.ndarray) -> np.ndarray:
        x0, y0, _, _ = self._boxes[cand.candidate_id]
        pos = self._positions[cand.candidate_id][cls][indices] + np.array([y0, x0])
        return windows(gray, pos, self.cfg.patch_px, self.cfg.patch_size)

    def test_values(self, cand: Candidate, variant: int) -> list[Any]:
        return []

    def source_of(self, image: Path, source: Any) -> tuple[str | None, str, int]:
        return None, "image", 1

    def extra_files(self, directory: Path, cands: list[Candidate],
                    role: dict[str, str]) -> dict[str, Any]:
        """test_rois.csv and a copy of each test ROI's annotation under test_interfaces/."""
        (directory / TEST_INTERFACES).mkdir()
        with open(directory / TEST_ROIS_CSV, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["roi", "candidate_id", "patient_id", "image", "x0", "y0", "x1", "y1",
                        "annotation"])
            n = 0
            for c in cands:
                if role[c.candidate_id] != "test":
                    continue
                rel = f"{TEST_INTERFACES}/roi_{n:05d}.csv"
                shutil.copyfile(c.annotation, directory / rel)
                w.writerow([n, c.candidate_id, c.group, str(c.image.resolve()),
                            *self._boxes[c.candidate_id], rel])
                n += 1
        return {"test_rois_file": TEST_ROIS_CSV, "test_rois": n}

    def notes(self) -> dict[str, Any]:
        return {**gray_notes("ultrasound gray", GRAY_SOURCE),
                "classes": "0 background, 1 lumen-intima, 2 media-adventitia; merge 1 and 2 "
                           "as positive for the validation AUC (Sec. VII, Fig. 10)",
                "test": "no test LMDB: apply the net at every pixel of each ROI in "
                        "test_rois.csv (medtl.studies.tajbakhsh2016.apps.imt.dense_batches)",
                "patch": f"{self.cfg.patch_px} px window centred on the pixel, resized to "
                         f"{self.cfg.patch_size}"}


# ------------------------------------------------------------------ test-time application

@dataclass(frozen=True)
class DenseRoi:
    """One test ROI of a built dataset, with everything dense inference needs."""

    roi: int
    candidate_id: str
    patient_id: str
    image: Path
    box: tuple[int, int, int, int]       # x0, y0, x1, y1 in the image
    interfaces: Interfaces               # expert annotation (ROI coordinates)
    patch_px: int
    patch_size: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the ROI: the shape of its confidence maps."""
        x0, y0, x1, y1 = self.box
        return y1 - y0, x1 - x0


def read_test_rois(dataset: Path) -> list[DenseRoi]:
    """The test ROIs of an intima-media dataset built by :func:`build`."""
    dataset = Path(dataset)
    cfg = read_manifest(dataset)["config"]
    out = []
    with open(dataset / TEST_ROIS_CSV, newline="") as f:
        for row in csv.DictReader(f):
            box = tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))
            inter = read_interfaces(dataset / row["annotation"], box[2] - box[0],
                                    height=box[3] - box[1])
            out.append(DenseRoi(int(row["roi"]), row["candidate_id"], row["patient_id"],
                               Path(row["image"]), box, inter, int(cfg["patch_px"]),
                               int(cfg["patch_size"])))
    return out


def dense_batches(roi: DenseRoi, *, batch: int = 256, stride: int = 1,
                  gray: np.ndarray | None = None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, cols, patches) batches covering every `stride`-th ROI pixel, row-major: rows
    and cols in ROI coordinates, patches n x 3 x S x S uint8 exactly as in training (feed
    them after the training mean is subtracted, as Caffe's transform_param does)."""
    if gray is None:
        gray = read_gray(roi.image)
    x0, y0, _, _ = roi.box
    h, w = roi.shape
    rr, cc = np.meshgrid(np.arange(0, h, stride), np.arange(0, w, stride), indexing="ij")
    rows, cols = rr.ravel(), cc.ravel()
    for start in range(0, len(rows), batch):
        r, c = rows[start:start + batch], cols[start:start + batch]
        yield r, c, windows(gray, np.stack([r + y0, c + x0], 1), roi.patch_px,
                            roi.patch_size)


def confidence_maps(shape: tuple[int, int], batches) -> tuple[np.ndarray, np.ndarray]:
    """The lumen-intima and media-adventitia maps from (rows, cols, probs n x 3) batches;
    pixels never scored stay NaN."""
    li = np.full(shape, np.nan, dtype=np.float32)
    ma = np.full(shape, np.nan, dtype=np.float32)
    for rows, cols, probs in batches:
        probs = np.asarray(probs)
        li[rows, cols] = probs[:, 1]
        ma[rows, cols] = probs[:, 2]
    return li, ma
