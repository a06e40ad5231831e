"""The candidate manifest: one CSV row per candidate (or frame, ROI, kidney box) of a private
dataset, the input of the Tajbakhsh and Ravishankar builders. data_prep/CANDIDATE_MANIFEST.md
documents it for users; this module reads and validates it.

Columns (header names exact, order free):

    image         path of a 2D frame (PNG/JPEG/TIFF/BMP) or a volume (a DICOM series folder,
                  or a NIfTI/MetaImage/NRRD file); relative paths are from the CSV's folder
    group         video / patient / subject id: the unit of every split and data reduction
    candidate_id  unique in the file
    label         class name or index (see each application); may be empty where noted
    split         optional: train or test (all rows, or none: then drawn by group)
    x0 y0 x1 y1   2D box in pixels: pixel (c, r) covers [c, c+1) x [r, r+1)
    cx cy cz      3D centre in world mm (ITK / DICOM patient coordinates, LPS)
    ax ay az      3D vessel axis (any length, not zero)
    mask          2D ground-truth image; a candidate whose box centre is inside it is positive
    annotation    a per-ROI file the application reads (intima-media interfaces)
    note          free text, ignored

Every problem is reported as `file:line: message`, before anything is written.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medtl.datasets.formats.images import (
    ImageError,
    image_size,
    is_volume_path,
    read_gray,
    volume_geometry,
)
from medtl.datasets.formats.table import finite, read_text
from medtl.errors import InputError

MANIFEST = "candidates.csv"   # the manifest's name inside a source folder
REQUIRED = ("image", "group", "candidate_id")
BOX = ("x0", "y0", "x1", "y1")
CENTRE3 = ("cx", "cy", "cz")
AXIS = ("ax", "ay", "az")
KNOWN = (*REQUIRED, "label", "split", *BOX, *CENTRE3, *AXIS, "mask", "annotation", "note")
SPLITS = ("train", "test")

Geometry = Literal["bbox", "roi", "centre3d", "none"]
LabelRule = Literal["required", "or_mask", "optional"]


class CandidateError(InputError):
    """A candidate manifest that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Schema:
    """What one application needs from the manifest."""

    application: str
    classes: tuple[str, ...]                 # label index -> name
    geometry: Geometry = "none"              # bbox: required box; roi: optional integer box
    label: LabelRule = "required"            # or_mask: empty label derived from `mask`
    default_label: int | None = None         # label of an empty cell when label is optional
    aliases: dict[str, int] = field(default_factory=dict)
    axis: bool = False                       # centre3d: the vessel axis is required
    annotation: bool = False                 # the annotation column is required
    volume: bool = False                     # `image` is a volume

    def parse_label(self, text: str) -> int | None:
        key = _norm(text)
        if not key:
            return None
        names = {_norm(c): i for i, c in enumerate(self.classes)}
        names.update({_norm(k): v for k, v in self.aliases.items()})
        if key in names:
            return names[key]
        if key.isdigit() and int(key) < len(self.classes):
            return int(key)
        raise ValueError(f"unknown label {text!r} (known: "
                         f"{', '.join(f'{i}={c}' for i, c in enumerate(self.classes))})")


def _norm(text: str) -> str:
    return text.strip().lower().replace("_", "-").replace(" ", "-")


@dataclass(frozen=True)
class Candidate:
    where: str                               # "file:line"
    image: Path
    group: str
    candidate_id: str
    label: int | None
    split: str | None
    box: tuple[float, float, float, float] | None = None      # x0, y0, x1, y1 (pixels)
    centre: tuple[float, float, float] | None = None          # world mm
    axis: tuple[float, float, float] | None = None            # unit vector
    mask: Path | None = None
    annotation: Path | None = None

    @property
    def box_centre(self) -> tuple[float, float]:
        if self.box is None:
            raise ValueError(f"{self.where}: no box")
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def _float(row: dict[str, str], key: str, where: str) -> float:
    return finite((row.get(key) or "").strip(), where, key, CandidateError)


def _present(row: dict[str, str], keys: tuple[str, ...]) -> int:
    return sum(1 for k in keys if (row.get(k) or "").strip())


def _path(base: Path, text: str) -> Path:
    p = Path(text.strip()).expanduser()
    return p if p.is_absolute() else (base / p)


def _header(path: Path, fieldnames: list[str] | None, schema: Schema) -> None:
    if not fieldnames:
        raise CandidateError(f"{path}:1: empty file, expected a header row")
    names = [f.strip() for f in fieldnames]
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise CandidateError(f"{path}:1: unknown column {unknown[0]!r} (known columns: "
                             f"{', '.join(KNOWN)})")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CandidateError(f"{path}:1: column {dup[0]!r} appears twice")
    need = list(REQUIRED)
    if schema.label == "required":
        need.append("label")
    if schema.geometry == "bbox":
        need.extend(BOX)
    if schema.geometry == "centre3d":
        need.extend(CENTRE3)
        if schema.axis:
            need.extend(AXIS)
    if schema.annotation:
        need.append("annotation")
    if schema.label == "or_mask" and "label" not in names and "mask" not in names:
        need.append("label (or mask)")
    missing = [n for n in need if n not in names]
    if missing:
        raise CandidateError(f"{path}:1: missing column {missing[0]!r} (the {schema.application}"
                             f" manifest needs {', '.join(need)})")


def _parse_row(row: dict[str, str], where: str, base: Path, schema: Schema) -> Candidate:
    if None in row:
        raise CandidateError(f"{where}: more cells than header columns")
    row = {k.strip(): (v or "").strip() for k, v in row.items()}
    for key in REQUIRED:
        if not row.get(key):
            what = "group id" if key == "group" else key
            raise CandidateError(f"{where}: {what} missing")
    split = row.get("split") or None
    if split is not None and split not in SPLITS:
        raise CandidateError(f"{where}: split {split!r} must be train or test")
    try:
        label = schema.parse_label(row.get("label", ""))
    except ValueError as exc:
        raise CandidateError(f"{where}: {exc}") from None
    mask = _path(base, row["mask"]) if row.get("mask") else None
    if label is None:
        if schema.label == "required" or (schema.label == "or_mask" and mask is None):
            raise CandidateError(f"{where}: label missing"
                                 + (" (and no mask to derive it from)"
                                    if schema.label == "or_mask" else ""))
        label = schema.default_label
    box = centre = axis = None
    n_box = _present(row, BOX)
    if schema.geometry in ("bbox", "roi") and (n_box or schema.geometry == "bbox"):
        if n_box != 4:
            raise CandidateError(f"{where}: a box needs all of x0, y0, x1, y1")
        x0, y0, x1, y1 = (_float(row, k, where) for k in BOX)
        if not (x1 > x0 and y1 > y0):
            raise CandidateError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty: "
                                 "need x1 > x0 and y1 > y0")
        if schema.geometry == "roi" and not all(float(v).is_integer()
                                                for v in (x0, y0, x1, y1)):
            raise CandidateError(f"{where}: an ROI box needs whole pixel edges")
        box = (x0, y0, x1, y1)
    if schema.geometry == "centre3d":
        centre = tuple(_float(row, k, where) for k in CENTRE3)
        if schema.axis:
            a = np.array([_float(row, k, where) for k in AXIS])
            norm = float(np.linalg.norm(a))
            if norm < 1e-9:
                raise CandidateError(f"{where}: vessel axis (ax, ay, az) is zero")
            axis = tuple(float(v) for v in a / norm)
    annotation = _path(base, row["annotation"]) if row.get("annotation") else None
    if schema.annotation and annotation is None:
        raise CandidateError(f"{where}: annotation missing")
    return Candidate(where, _path(base, row["image"]), row["group"], row["candidate_id"],
                     label, split, box, centre, axis, mask, annotation)


def read_candidates(path: Path, schema: Schema, *, check_images: bool = True
                    ) -> list[Candidate]:
    """Every row of the manifest at `path`, validated against `schema` and the images."""
    path = Path(path)
    reader = csv.DictReader(read_text(path, CandidateError).splitlines())
    _header(path, reader.fieldnames, schema)
    base = path.resolve().parent
    out: list[Candidate] = []
    seen: dict[str, str] = {}
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not any((v or "").strip() for k, v in row.items() if k is not None):
            continue
        cand = _parse_row(row, where, base, schema)
        if cand.candidate_id in seen:
            raise CandidateError(f"{where}: candidate_id {cand.candidate_id!r} already used at "
                                 f"{seen[cand.candidate_id]}")
        seen[cand.candidate_id] = where
        out.append(cand)
    if not out:
        raise CandidateError(f"{path}: no candidate rows")
    splits = {c.split is None for c in out}
    if len(splits) == 2:
        first = next(c for c in out if c.split is None)
        raise CandidateError(f"{first.where}: split missing (give it on every row or on none)")
    if check_images:
        out = check_against_images(out, schema)
    return out


def check_against_images(cands: list[Candidate], schema: Schema) -> list[Candidate]:
    """Images exist, boxes and centres lie inside them, labels derive from masks."""
    sizes: dict[Path, tuple[int, int]] = {}
    geoms: dict[Path, object] = {}
    masks: dict[Path, np.ndarray] = {}
    out = []
    for c in cands:
        if schema.volume:
            if c.image not in geoms:
                if not c.image.exists():
                    raise CandidateError(f"{c.where}: volume {c.image} does not exist")
                if not is_volume_path(c.image):
                    raise CandidateError(f"{c.where}: {c.image} is neither a DICOM series folder"
                                         " nor a NIfTI/MetaImage/NRRD file")
                try:
                    geoms[c.image] = volume_geometry(c.image)
                except ImageError as exc:
                    raise CandidateError(f"{c.where}: {exc}") from None
            if c.centre is not None and not geoms[c.image].inside(np.array(c.centre))[0]:
                raise CandidateError(f"{c.where}: centre {c.centre} mm lies outside volume "
                                     f"{c.image}")
            out.append(c)
            continue
        if c.image not in sizes:
            if not c.image.is_file():
                raise CandidateError(f"{c.where}: image {c.image} does not exist")
            try:
                sizes[c.image] = image_size(c.image)
            except ImageError as exc:
                raise CandidateError(f"{c.where}: {exc}") from None
        w, h = sizes[c.image]
        if c.box is not None:
            x0, y0, x1, y1 = c.box
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise CandidateError(f"{c.where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies "
                                     f"outside the {w} x {h} image {c.image}")
        if c.label is None and c.mask is not None:
            c = _label_from_mask(c, masks, (w, h))
        out.append(c)
    return out


def _label_from_mask(c: Candidate, cache: dict[Path, np.ndarray], size: tuple[int, int]
                     ) -> Candidate:
    """Positive when the candidate (its box centre) lies inside the ground truth
    (Tajbakhsh 2016 Sec. VI-A)."""
    if c.mask not in cache:
        if not c.mask.is_file():
            raise CandidateError(f"{c.where}: mask {c.mask} does not exist")
        try:
            cache[c.mask] = read_gray(c.mask)
        except ImageError as exc:
            raise CandidateError(f"{c.where}: {exc}") from None
    mask = cache[c.mask]
    if (mask.shape[1], mask.shape[0]) != size:
        raise CandidateError(f"{c.where}: mask {c.mask} is {mask.shape[1]} x {mask.shape[0]}, "
                             f"the image is {size[0]} x {size[1]}")
    if c.box is None:
        raise CandidateError(f"{c.where}: a label from a mask needs the candidate's box")
    cx, cy = c.box_centre
    col = min(math.floor(cx), size[0] - 1)
    row = min(math.floor(cy), size[1] - 1)
    return Candidate(c.where, c.image, c.group, c.candidate_id, int(mask[row, col] > 0),
                     c.split, c.box, c.centre, c.axis, c.mask, c.annotation)


def write_candidates(path: Path, rows: list[dict[str, object]]) -> Path:
    """A manifest from dicts of column -> value (phantoms use it); columns in KNOWN order."""
    cols = [k for k in KNOWN if any(k in r for r in rows)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return Path(path)
