"""Reader for the ILD database of Depeursinge et al. 2012 (HUG, Geneva), as distributed.

One folder per patient with `CT-XXXX-YYYY.dcm` slices and ROI text files:

    Study: <uid>            Series: <uid>
    SpacingX: 0.68          SpacingY: 0.68          SpacingZ: 10
    label: fibrosis                 (persists until the next label:)
    slice_number: 12                (1-based; persists until the next slice_number:)
    nb_points_on_contour: 25        (then 25 lines "x y" in mm; pixels = mm / spacing)

Slices are numbered in InstanceNumber order (file name order where InstanceNumber is
missing). Of the 17 labels, the six-class studies keep healthy, emphysema, ground_glass,
fibrosis, micronodules and consolidation (Shin 2016 Sec. II).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medtl.datasets.formats.dicom import DicomError, is_dicom
from medtl.errors import InputError

SIX_CLASSES = ("healthy", "emphysema", "ground_glass", "fibrosis", "micronodules",
               "consolidation")
SHORT_NAMES = ("NM", "EM", "GG", "FB", "MN", "CD")
_KEY = re.compile(r"^\s*([A-Za-z_]+):\s*(.*?)\s*$")


class IldDataError(InputError):
    """An ILD source file that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Roi:
    id: str                        # "<patient>:<file name>:<line>"
    patient: str
    label: str
    slice_number: int              # 1-based
    points_mm: np.ndarray          # (n, 2) x, y
    spacing: tuple[float, float]   # SpacingX, SpacingY (mm per pixel)
    where: str                     # file:line of its nb_points_on_contour

    def pixels(self) -> np.ndarray:
        """(n, 2) x (column), y (row) in pixels."""
        return self.points_mm / np.asarray(self.spacing)


@dataclass
class IldPatient:
    pid: str
    folder: Path
    slice_files: list[Path]        # slice_number n is slice_files[n - 1]
    rois: list[Roi] = field(default_factory=list)
    roi_files: list[Path] = field(default_factory=list)
    unknown_keys: int = 0


def parse_roi_file(path: Path, patient: str) -> tuple[list[Roi], int]:
    """Every contour of an ROI file, and the count of lines with keys it does not know."""
    path = Path(path)
    try:
        lines = path.read_text(errors="strict").splitlines()
    except OSError as exc:
        raise IldDataError(f"{path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise IldDataError(f"{path}: not a text file") from exc
    spacing: dict[str, float] = {}
    label: str | None = None
    slice_number: int | None = None
    rois: list[Roi] = []
    unknown = 0
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        if not line.strip():
            continue
        m = _KEY.match(line)
        if not m:
            raise IldDataError(f"{path}:{n}: expected 'key: value', got {line.strip()!r}")
        key, value = m.group(1), m.group(2)
        low = key.lower()
        if low in ("spacingx", "spacingy", "spacingz"):
            try:
                spacing[low] = float(value)
            except ValueError as exc:
                raise IldDataError(f"{path}:{n}: {key} {value!r} is not a number") from exc
            if spacing[low] <= 0:
                raise IldDataError(f"{path}:{n}: {key} must be positive")
        elif low == "label":
            if not value:
                raise IldDataError(f"{path}:{n}: empty label")
            label = value
        elif low == "slice_number":
            try:
                slice_number = int(value)
            except ValueError as exc:
                raise IldDataError(f"{path}:{n}: slice_number {value!r} is not an "
                                   "integer") from exc
            if slice_number < 1:
                raise IldDataError(f"{path}:{n}: slice_number is 1-based, got {slice_number}")
        elif low == "nb_points_on_contour":
            where = f"{path}:{n}"
            try:
                count = int(value)
            except ValueError as exc:
                raise IldDataError(f"{where}: nb_points_on_contour {value!r} is not an "
                                   "integer") from exc
            if label is None or slice_number is None:
                raise IldDataError(f"{where}: contour before its label: / slice_number:")
            if "spacingx" not in spacing or "spacingy" not in spacing:
                raise IldDataError(f"{where}: contour before SpacingX: / SpacingY:")
            if n + count > len(lines):
                raise IldDataError(f"{where}: {count} points announced, the file ends after "
                                   f"{len(lines) - n}")
            points = []
            for k in range(count):
                parts = lines[n + k].split()
                try:
                    if len(parts) != 2:
                        raise ValueError
                    points.append((float(parts[0]), float(parts[1])))
                except ValueError as exc:
                    raise IldDataError(f"{path}:{n + k + 1}: expected 'x y' in mm, got "
                                       f"{lines[n + k].strip()!r}") from exc
            n += count
            rois.append(Roi(f"{patient}:{path.name}:{where.rsplit(':', 1)[1]}", patient, label,
                            slice_number, np.array(points, dtype=float).reshape(-1, 2),
                            (spacing["spacingx"], spacing["spacingy"]), where))
        elif low in ("study", "series"):
            pass
        else:
            unknown += 1
    return rois, unknown


def _slice_order(files: list[Path]) -> list[Path]:
    keyed = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError) as exc:
            raise IldDataError(f"{f}: not a readable DICOM file ({exc})") from exc
        number = getattr(ds, "InstanceNumber", None)
        keyed.append((int(number) if number not in (None, "") else 10**9, f.name, f))
    numbers = [k[0] for k in keyed]
    if len(set(numbers)) != len(numbers) and 10**9 not in numbers:
        dup = sorted(k for k in numbers if numbers.count(k) > 1)[0]
        files_dup = [str(k[2]) for k in keyed if k[0] == dup]
        raise IldDataError(f"{files_dup[1]}: InstanceNumber {dup} repeats {files_dup[0]}")
    return [k[2] for k in sorted(keyed)]


def scan(root: Path) -> list[IldPatient]:
    """Every patient folder under `root` (a folder holding DICOM slices), with its ROIs."""
    root = Path(root)
    if not root.is_dir():
        raise IldDataError(f"{root}: no such directory (the ILD database root)")
    patients = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        dicoms = sorted(f for f in folder.iterdir() if f.is_file() and is_dicom(f))
        texts = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".txt")
        if not dicoms:
            if texts:
                raise IldDataError(f"{texts[0]}: ROI file for patient {folder.name}, which has "
                                   "no DICOM slices")
            continue
        patient = IldPatient(folder.name, folder, _slice_order(dicoms), roi_files=texts)
        for t in texts:
            rois, unknown = parse_roi_file(t, folder.name)
            patient.unknown_keys += unknown
            for roi in rois:
                if roi.slice_number > len(patient.slice_files):
                    raise IldDataError(f"{roi.where}: slice_number {roi.slice_number}, but "
                                       f"{folder} has {len(patient.slice_files)} slices")
            patient.rois.extend(rois)
        patients.append(patient)
    if not patients:
        raise IldDataError(f"{root}: no patient folders with DICOM slices")
    return patients


def read_slice(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """HU (float32 rows x columns) and PixelSpacing (row, column) of one slice."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(io.BytesIO(path.read_bytes()))
        pixels = ds.pixel_array
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DicomError(f"{path}: not a readable DICOM slice ({exc})") from exc
    except Exception as exc:  # pixel decoders raise their own types
        raise DicomError(f"{path}: pixel data cannot be decoded ({exc})") from exc
    if pixels.ndim != 2:
        raise DicomError(f"{path}: expected one 2D slice, got pixel data {pixels.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    spacing = tuple(float(v) for v in getattr(ds, "PixelSpacing", (1.0, 1.0)))
    return pixels.astype(np.float32) * slope + intercept, spacing
