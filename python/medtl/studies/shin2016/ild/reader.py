"""Reader for the ILD database of Depeursinge et al. 2012 (HUG, Geneva), as distributed.

One folder per patient with `CT-XXXX-YYYY.dcm` slices and ROI text files:

    Study: <uid>            Series: <uid>
    SpacingX: 0.68          SpacingY: 0.68          SpacingZ: 10
    label: fibrosis                 (persists until the next label:)
    slice_number: 12                (1-based; persists until the next slice_number:)
    nb_points_on_contour: 25        (then 25 lines "x y" in mm; pixels = mm / spacing)

Slices are numbered in InstanceNumber order (file name order where InstanceNumber is
missing). They are read one by one through the core DICOM checks (CT images only, files cut
short named as such, PixelPaddingValue read as air); a DICOMDIR or another non-image object in
a patient folder is skipped, with a line in the patient's notes. Of the 17 labels, the
six-class studies keep healthy, emphysema, ground_glass, fibrosis, micronodules and
consolidation (Shin 2016 Sec. II).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtl.datasets.formats.dicom import (
    CtSlice,
    DicomError,
    is_dicom,
    read_ct_slice,
    read_ct_slice_headers,
)
from medtl.datasets.formats.table import finite, read_text
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
    notes: list[str] = field(default_factory=list)  # DICOM files skipped


def parse_roi_file(path: Path, patient: str) -> tuple[list[Roi], int]:
    """Every contour of an ROI file, and the count of lines with keys it does not know."""
    path = Path(path)
    lines = read_text(path, IldDataError).splitlines()
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
            spacing[low] = finite(value, f"{path}:{n}", key, IldDataError)
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
            points = [_point(lines[n + k], f"{path}:{n + k + 1}") for k in range(count)]
            n += count
            rois.append(Roi(f"{patient}:{path.name}:{where.rsplit(':', 1)[1]}", patient, label,
                            slice_number, np.array(points, dtype=float).reshape(-1, 2),
                            (spacing["spacingx"], spacing["spacingy"]), where))
        elif low in ("study", "series"):
            pass
        else:
            unknown += 1
    return rois, unknown


def _point(line: str, where: str) -> tuple[float, float]:
    """A contour point 'x y' in mm."""
    parts = line.split()
    if len(parts) != 2:
        raise IldDataError(f"{where}: expected 'x y' in mm, got {line.strip()!r}")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise IldDataError(f"{where}: expected 'x y' in mm, got {line.strip()!r}") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise IldDataError(f"{where}: contour point {line.strip()!r} must be finite numbers "
                           "(mm)")
    return x, y


def _slice_order(slices: list[CtSlice]) -> list[Path]:
    keyed = [(10**9 if s.instance_number is None else s.instance_number, s.path.name, s.path)
             for s in slices]
    numbers = [k[0] for k in keyed]
    if len(set(numbers)) != len(numbers) and 10**9 not in numbers:
        dup = sorted(k for k in numbers if numbers.count(k) > 1)[0]
        files_dup = [str(k[2]) for k in keyed if k[0] == dup]
        raise IldDataError(f"{files_dup[1]}: InstanceNumber {dup} repeats {files_dup[0]}")
    return [k[2] for k in sorted(keyed)]


def _headers(files: list[Path]) -> tuple[list[CtSlice], list[str]]:
    """The CT slices among a patient's DICOM files (headers, checked), and a note per file
    skipped."""
    notes: list[str] = []
    try:
        return read_ct_slice_headers(files, notes), notes
    except DicomError as exc:
        raise IldDataError(str(exc)) from exc


def scan(root: Path) -> list[IldPatient]:
    """Every patient folder under `root` (a folder holding DICOM slices), with its ROIs."""
    root = Path(root)
    if not root.is_dir():
        raise IldDataError(f"{root}: no such directory (the ILD database root)")
    patients = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        dicoms = sorted(f for f in folder.iterdir() if f.is_file() and is_dicom(f))
        texts = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".txt")
        slices, notes = _headers(dicoms)
        if not slices:
            if texts:
                skipped = f" ({len(notes)} non-image DICOM file(s) skipped)" if notes else ""
                raise IldDataError(f"{texts[0]}: ROI file for patient {folder.name}, which has "
                                   f"no DICOM slices{skipped}")
            _check_not_nested(folder)
            continue
        patient = IldPatient(folder.name, folder, _slice_order(slices), roi_files=texts,
                             notes=notes)
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


def _check_not_nested(folder: Path) -> None:
    """A folder without slices is skipped, unless it hides a patient one level deeper."""
    inner = next((p for p in sorted(folder.iterdir()) if p.is_dir()), None)
    if inner is not None:
        raise IldDataError(f"{folder}: no DICOM slices directly inside, but a sub-folder "
                           f"({inner.name}): the kit reads <root>/<patient>/<slices>; move "
                           "the slices and ROI files up, or point the root one level down")


def read_slice(path: Path, notes: list[str] | None = None
               ) -> tuple[np.ndarray, tuple[float, float]]:
    """HU (float32 rows x columns) and PixelSpacing (row, column; 1 mm where the file has
    none: the ROI files give their own) of one slice, read through the core DICOM checks (a
    DicomError naming the file); PixelPaddingValue pixels are air, with a line in `notes`."""
    s = read_ct_slice(path)
    if notes is not None:
        notes.extend(s.notes)
    return s.hu, s.spacing or (1.0, 1.0)
