"""CT series in DICOM: read with full validation of the geometry, and write (for phantoms).

The reader derives the world geometry from ImagePositionPatient, ImageOrientationPatient and
PixelSpacing exactly as ITK does (slices sorted along the normal of the orientation), converts
stored values to HU with each slice's RescaleSlope/Intercept, and names the file and the tag
on anything it cannot use.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medtl.datasets.formats.geometry import Geometry
from medtl.errors import InputError

REQUIRED = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
            "Columns", "PixelData")
ORIENTATION_TOL = 1e-4
SPACING_TOL = 0.01  # relative tolerance on the distance between consecutive slices


class DicomError(InputError):
    """A DICOM file or series cannot be used; the message names the file."""


@dataclass
class Volume:
    hu: np.ndarray | None   # float32 (k, j, i); None when read with pixels=False
    geometry: Geometry
    series_uid: str
    files: list[Path]       # in slice order
    digest: str             # sha256 over the files' sha256s, in slice order ("" headers only)


@dataclass
class _Slice:
    path: Path
    ds: pydicom.Dataset
    sha256: str


def _read(path: Path, *, pixels: bool) -> _Slice:
    """A file's dataset (and sha256 when the whole file is read for its pixels)."""
    try:
        if pixels:
            raw = path.read_bytes()
            source: object = io.BytesIO(raw)
        else:
            raw, source = b"", path
        ds = pydicom.dcmread(source, stop_before_pixels=not pixels)
    except OSError as exc:
        raise DicomError(f"{path}: cannot be read ({exc.strerror})") from exc
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError,
            AttributeError) as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({exc})") from exc
    return _Slice(path, ds, hashlib.sha256(raw).hexdigest() if pixels else "")


def is_dicom(path: Path) -> bool:
    """A file with the DICM preamble marker (or a .dcm name)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def find_series(directory: Path) -> dict[str, list[Path]]:
    """DICOM files under `directory` (recursively), grouped by SeriesInstanceUID."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DicomError(f"{directory}: no such directory")
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and is_dicom(p)):
        uid = str(getattr(_read(path, pixels=False).ds, "SeriesInstanceUID", "") or "")
        if not uid:
            raise DicomError(f"{path}: no SeriesInstanceUID")
        groups[uid].append(path)
    return dict(groups)


def _vector(ds: pydicom.Dataset, tag: str, n: int, path: Path) -> np.ndarray:
    try:
        values = np.array([float(v) for v in ds[tag].value], dtype=float)
    except (KeyError, TypeError, ValueError) as exc:
        raise DicomError(f"{path}: tag {tag} is missing or not numeric") from exc
    if values.shape != (n,):
        raise DicomError(f"{path}: tag {tag} has {values.size} values, expected {n}")
    return values


def _hu(s: _Slice) -> np.ndarray:
    try:
        pixels = s.ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise DicomError(f"{s.path}: pixel data cannot be decoded ({exc})") from exc
    slope = float(getattr(s.ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(s.ds, "RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_series(files: Iterable[Path], *, pixels: bool = True) -> Volume:
    """One CT series (all files of one SeriesInstanceUID) as a HU volume with its geometry;
    with pixels=False only the headers are read (hu is None)."""
    slices = [_read(Path(p), pixels=pixels) for p in files]
    if not slices:
        raise DicomError("empty series: no DICOM files given")
    for s in slices:
        for tag in REQUIRED:
            if tag == "PixelData" and not pixels:
                continue
            if tag not in s.ds:
                raise DicomError(f"{s.path}: required tag {tag} is missing")
    first = slices[0]
    uid = str(getattr(first.ds, "SeriesInstanceUID", ""))
    iop = _vector(first.ds, "ImageOrientationPatient", 6, first.path)
    spacing_rc = _vector(first.ds, "PixelSpacing", 2, first.path)
    rows, cols = int(first.ds.Rows), int(first.ds.Columns)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1) > 1e-3 or abs(row_dir @ col_dir) > 1e-3:
        raise DicomError(f"{first.path}: ImageOrientationPatient {iop.tolist()} is not two "
                         "orthonormal direction cosines")
    for s in slices[1:]:
        if str(getattr(s.ds, "SeriesInstanceUID", "")) != uid:
            raise DicomError(f"{s.path}: belongs to another series than {first.path}")
        if np.abs(_vector(s.ds, "ImageOrientationPatient", 6, s.path) - iop).max() \
                > ORIENTATION_TOL:
            raise DicomError(f"{s.path}: ImageOrientationPatient differs from {first.path}")
        if np.abs(_vector(s.ds, "PixelSpacing", 2, s.path) - spacing_rc).max() > 1e-6:
            raise DicomError(f"{s.path}: PixelSpacing differs from {first.path}")
        if (int(s.ds.Rows), int(s.ds.Columns)) != (rows, cols):
            raise DicomError(f"{s.path}: image size differs from {first.path}")
    positions = np.array([_vector(s.ds, "ImagePositionPatient", 3, s.path) for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    positions, along = positions[order], along[order]
    if len(slices) > 1:
        steps = np.diff(along)
        if np.any(steps < 1e-6):
            dup = int(np.argmin(steps))
            raise DicomError(f"{slices[dup + 1].path}: same slice position as "
                             f"{slices[dup].path}")
        dz = float(np.median(steps))
        bad = np.abs(steps - dz) > SPACING_TOL * dz + 1e-3
        if np.any(bad):
            i = int(np.argmax(bad))
            raise DicomError(f"{slices[i + 1].path}: slice gap of {steps[i]:.3f} mm after "
                             f"{slices[i].path} (series spacing {dz:.3f} mm): a slice is "
                             "missing or misplaced")
    else:
        dz = float(getattr(first.ds, "SliceThickness", 1.0) or 1.0)
    hu = None
    if pixels:
        hu = np.empty((len(slices), rows, cols), dtype=np.float32)
        for k, s in enumerate(slices):
            plane = _hu(s)
            if plane.shape != (rows, cols):
                raise DicomError(f"{s.path}: pixel data shape {plane.shape} != Rows x Columns")
            hu[k] = plane
    # PixelSpacing is (between rows, between columns) = (j, i) spacing.
    geometry = Geometry(origin=positions[0], spacing=np.array([spacing_rc[1], spacing_rc[0], dz]),
                        direction=np.stack([row_dir, col_dir, normal], axis=1),
                        shape=(len(slices), rows, cols))
    digest = (hashlib.sha256("".join(s.sha256 for s in slices).encode()).hexdigest()
              if pixels else "")
    return Volume(hu, geometry, uid, [s.path for s in slices], digest)


def single_series_files(directory: Path) -> list[Path]:
    """The files of the one CT series under `directory`; an error naming it when there are
    none or several."""
    groups = find_series(directory)
    if not groups:
        raise DicomError(f"{directory}: no DICOM files")
    if len(groups) > 1:
        sizes = ", ".join(f"{uid} ({len(f)} files)" for uid, f in groups.items())
        raise DicomError(f"{directory}: {len(groups)} series found ({sizes}); expected one")
    return next(iter(groups.values()))


def read_single_series(directory: Path, *, pixels: bool = True) -> Volume:
    return read_series(single_series_files(directory), pixels=pixels)


def write_ct_series(dest: Path, hu: np.ndarray, geometry: Geometry, *, patient_id: str,
                    study_uid: str | None = None, series_uid: str | None = None,
                    name_pattern: str = "1-{n:03d}.dcm", description: str = "") -> list[Path]:
    """Write `hu` (k, j, i) as a CT Image Storage series, one file per slice.

    Stored values are HU + 1024 (uint16, 12 bits) with RescaleIntercept -1024, as scanners do.
    `name_pattern` gets n (1-based slice number).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    direction = np.asarray(geometry.direction, float)
    spacing = np.asarray(geometry.spacing, float)
    stored = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)
    paths = []
    for k in range(hu.shape[0]):
        position = geometry.index_to_world(np.array([0.0, 0.0, k]))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = dest / name_pattern.format(n=k + 1)
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientID = patient_id
        ds.PatientName = patient_id
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in
                                      np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
        ds.SliceLocation = f"{position @ direction[:, 2]:.6f}"
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
