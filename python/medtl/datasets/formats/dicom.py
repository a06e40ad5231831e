"""CT series in DICOM: read with full validation of the geometry, and write (for phantoms).

The reader derives the world geometry from ImagePositionPatient, ImageOrientationPatient and
PixelSpacing exactly as ITK does (slices sorted along the normal of the orientation), converts
stored values to HU with each slice's RescaleSlope/Intercept, and names the file and the tag
on anything it cannot use. Real archives are not well-formed, so it also refuses what would
otherwise come out wrong without a word: images that are not CT (their values are not HU),
files cut short (pydicom reads them silently), gantry-tilted series (their slices do not step
along the normal), single slices. It reads Enhanced CT frame by frame, reads PixelPaddingValue
pixels as air, and skips a DICOMDIR or another non-image object in a series folder with a note.
Slices that are no volume (numbered HRCT slices) are read one by one with the same checks
(`read_ct_slice`, `read_ct_slice_headers`).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    LegacyConvertedEnhancedCTImageStorage,
    MediaStorageDirectoryStorage,
    generate_uid,
)

from medtl.datasets.formats.geometry import Geometry, stack_tilt
from medtl.errors import InputError, one_line
from medtl.provenance import assumed

REQUIRED = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
            "Columns", "PixelData")
ORIENTATION_TOL = 1e-4
SPACING_TOL = 0.01  # relative tolerance on the distance between consecutive slices
# Slice positions may drift across the slice plane by this fraction of a pixel over a series
# (rounding of the positions); more is a gantry tilt, which the geometry cannot express.
TILT_TOL_PX = 0.1
ENHANCED_CT = frozenset({EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage})
CT_CLASSES = ENHANCED_CT | {CTImageStorage}
PADDING_HU = assumed(
    -1024.0, "PixelPaddingValue marks pixels outside the reconstructed field of view, i.e. "
    "outside the patient: they are read as air, the value the views give outside the scan "
    "(pad_hu), not as the scanner's out-of-range code (e.g. -3995 HU)")
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"})  # 4-byte lengths
# Where an Enhanced CT file keeps the attributes a classic CT file has at its top level.
_GROUPS = {"ImagePositionPatient": "PlanePositionSequence",
           "ImageOrientationPatient": "PlaneOrientationSequence",
           "PixelSpacing": "PixelMeasuresSequence",
           "RescaleSlope": "PixelValueTransformationSequence",
           "RescaleIntercept": "PixelValueTransformationSequence"}


class DicomError(InputError):
    """A DICOM file or series cannot be used; the message names the file."""


@dataclass
class Volume:
    hu: np.ndarray | None   # float32 (k, j, i); None when read with pixels=False
    geometry: Geometry
    series_uid: str         # "" for a series without SeriesInstanceUID
    files: list[Path]       # in slice order
    digest: str             # sha256 over the files' sha256s, in slice order ("" headers only)
    notes: list[str] = field(default_factory=list)  # files skipped, padding read as air


@dataclass
class CtSlice:
    """One CT image file read on its own: for collections of numbered slices that are no
    volume (HRCT slices 10 mm apart, read one by one)."""

    path: Path
    hu: np.ndarray | None                   # float32 (rows, columns); None with pixels=False
    shape: tuple[int, int]                  # Rows, Columns
    spacing: tuple[float, float] | None     # PixelSpacing (between rows, between columns), mm
    instance_number: int | None
    notes: list[str] = field(default_factory=list)  # padding read as air


@dataclass
class _Slice:
    path: Path
    ds: pydicom.Dataset
    sha256: str
    size: int                  # bytes in the file
    has_pixels: bool           # a complete pixel data element is there
    frame: int | None = None   # the frame of an Enhanced CT file

    @property
    def where(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


def _damaged(path: Path, what: str) -> DicomError:
    return DicomError(f"{path}: damaged or truncated: {what}")


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"


def _read(path: Path, *, pixels: bool) -> _Slice:
    """A file's dataset (and sha256 when the whole file is read for its pixels), its pixel data
    checked to be all there: pydicom reads a file cut short without a word."""
    try:
        raw = path.read_bytes() if pixels else b""
        with io.BytesIO(raw) if pixels else open(path, "rb") as f:
            size = len(raw) if pixels else os.fstat(f.fileno()).st_size
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            has_pixels = _pixel_element_complete(f, ds, size, path)
            if pixels and has_pixels:
                f.seek(0)
                ds = pydicom.dcmread(f)
    except DicomError:
        raise
    except OSError as exc:
        raise DicomError(f"{path}: cannot be read ({exc.strerror})") from exc
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            struct.error) as exc:
        raise DicomError(_unparsable(path, exc)) from exc
    return _Slice(path, ds, hashlib.sha256(raw).hexdigest() if pixels else "", size, has_pixels)


def _unparsable(path: Path, exc: Exception) -> str:
    try:
        with open(path, "rb") as f:
            head, size = f.read(132), os.fstat(f.fileno()).st_size
    except OSError:
        head, size = b"", -1
    if 0 <= size < 132:
        return (f"{path}: damaged or truncated: {_bytes(size)}, shorter than the 132-byte "
                "preamble every DICOM file starts with")
    if head[128:] == b"DICM":
        return f"{path}: damaged or truncated: cannot be parsed ({one_line(exc)})"
    return f"{path}: not a readable DICOM file ({one_line(exc)})"


def _pixel_element_complete(f: BinaryIO, ds: pydicom.Dataset, size: int, path: Path) -> bool:
    """Whether the file has pixel data, `f` standing where pydicom stopped before it; a
    DicomError when the element runs past the end of the file."""
    start = f.tell()
    if start >= size:
        return False
    implicit, little = ds.original_encoding
    order = ">" if little is False else "<"
    head = f.read(12)
    if len(head) < 8:
        raise _damaged(path, f"the file ends at byte {size} inside its pixel data's header")
    group, elem = struct.unpack(order + "HH", head[:4])
    if (group << 16 | elem) not in _PIXEL_TAGS:
        raise _damaged(path, f"unreadable data at byte {start}")
    if implicit:
        length, offset = struct.unpack(order + "I", head[4:8])[0], 8
    elif head[4:6] in _LONG_VRS and len(head) == 12:
        length, offset = struct.unpack(order + "I", head[8:12])[0], 12
    else:
        length, offset = struct.unpack(order + "H", head[6:8])[0], 8
    if length == 0xFFFFFFFF:
        _check_fragments(f, start + offset, size, path)
    elif start + offset + length > size:
        raise _damaged(path, f"the file ends {_bytes(start + offset + length - size)} short "
                       f"of its pixel data ({_bytes(length)})")
    return True


def _check_fragments(f: BinaryIO, pos: int, size: int, path: Path) -> None:
    """Compressed pixel data: items (always little endian) up to the sequence delimiter."""
    while True:
        f.seek(pos)
        item = f.read(8)
        if len(item) < 8:
            raise _damaged(path, f"the file ends at byte {size} inside its compressed pixel "
                           "data (no end-of-sequence marker)")
        group, elem, length = struct.unpack("<HHI", item)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return
        if (group, elem) != (0xFFFE, 0xE000):
            raise _damaged(path, f"no fragment at byte {pos} of its compressed pixel data")
        pos += 8 + length
        if pos > size:
            raise _damaged(path, f"the file ends {_bytes(pos - size)} short of a fragment of "
                           "its compressed pixel data")


def _sop_class(ds: pydicom.Dataset) -> str:
    uid = str(ds.get("SOPClassUID", "") or "")
    meta = getattr(ds, "file_meta", None)
    if not uid and meta is not None:
        uid = str(meta.get("MediaStorageSOPClassUID", "") or "")
    return uid


def _class_name(uid: str) -> str:
    return UID(uid).name if uid else "no SOP Class UID"


def _series_uid(ds: pydicom.Dataset) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "")


def _not_an_image(s: _Slice) -> str | None:
    """Why a file is no image at all (a DICOMDIR, a report, ...); None for an image, or for
    what was an image before it was cut short."""
    sop = _sop_class(s.ds)
    if sop == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in s.ds:
        return "a DICOMDIR (an index of the media, not an image)"
    if s.has_pixels or not sop or "Image" in _class_name(sop):
        return None
    return f"not an image ({_class_name(sop)})"


def _no_pixels(s: _Slice) -> DicomError:
    return _damaged(s.path, f"the file ends at byte {s.size} before any pixel data")


def _check_ct_image(s: _Slice) -> None:
    """A complete CT image, or a DicomError naming the file and what it is instead."""
    reason = _not_an_image(s)
    if reason:
        raise DicomError(f"{s.path}: {reason}, not a CT slice")
    if not s.has_pixels:
        raise _no_pixels(s)
    sop = _sop_class(s.ds)
    name = _class_name(sop)
    modality = str(s.ds.get("Modality", "") or "")
    if not sop:
        raise DicomError(f"{s.path}: no SOP Class UID (Modality {modality or 'missing'}): "
                         "cannot tell a CT image from another kind of image")
    if sop not in CT_CLASSES:
        why = ("a screen capture or derived picture, without CT geometry or calibrated "
               "Hounsfield units; use the original CT series" if "Secondary Capture" in name
               else "its values are not Hounsfield units")
        raise DicomError(f"{s.path}: {name} (Modality {modality or 'missing'}), not a CT "
                         f"image: {why}")
    if modality and modality != "CT":
        raise DicomError(f"{s.path}: Modality {modality} in a {name} file: not a CT image, "
                         "its values are not Hounsfield units")


def _frames(s: _Slice) -> list[_Slice]:
    """An Enhanced CT file's frames as slices (a classic CT file is one slice)."""
    if _sop_class(s.ds) not in ENHANCED_CT:
        return [s]
    n = int(s.ds.get("NumberOfFrames", 1) or 1)
    per_frame = s.ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != n:
        raise DicomError(f"{s.path}: {n} frames but {len(per_frame)} per-frame functional "
                         "groups")
    return [replace(s, frame=i) for i in range(n)]


def _get(s: _Slice, keyword: str) -> Any:
    """An attribute of a slice; an Enhanced CT frame's from its own or the shared groups."""
    if s.frame is None or keyword not in _GROUPS:
        return s.ds.get(keyword)
    groups = [s.ds.PerFrameFunctionalGroupsSequence[s.frame],
              *list(s.ds.get("SharedFunctionalGroupsSequence") or [])[:1]]
    for group in groups:
        macro = group.get(_GROUPS[keyword])
        if macro and keyword in macro[0]:
            return macro[0].get(keyword)
    return None


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


def _scan(directory: Path, notes: list[str] | None) -> dict[str, list[_Slice]]:
    directory = Path(directory)
    if not directory.is_dir():
        raise DicomError(f"{directory}: no such directory")
    groups: dict[str, list[_Slice]] = defaultdict(list)
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and is_dicom(p)):
        s = _image(path, notes)
        if s is not None:
            groups[_series_uid(s.ds)].append(s)
    return dict(groups)


def _image(path: Path, notes: list[str] | None) -> _Slice | None:
    """A DICOM file's header, or None (with a line in `notes`) for a DICOMDIR or another
    non-image object; an image cut short before its pixel data is a DicomError."""
    s = _read(path, pixels=False)
    reason = _not_an_image(s)
    if reason:
        if notes is not None:
            notes.append(f"{path}: skipped, {reason}")
        return None
    if not s.has_pixels:
        raise _no_pixels(s)
    return s


def find_series(directory: Path, notes: list[str] | None = None) -> dict[str, list[Path]]:
    """DICOM images under `directory` (recursively), grouped by SeriesInstanceUID ("" for
    images without one); a DICOMDIR or another non-image object is skipped with a line in
    `notes`."""
    return {uid: [s.path for s in group] for uid, group in _scan(directory, notes).items()}


def _vector(s: _Slice, tag: str, n: int) -> np.ndarray:
    value = _get(s, tag)
    if value is not None and not isinstance(value, (list, tuple)) and \
            not hasattr(value, "__len__"):
        value = [value]
    try:
        values = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{s.where}: tag {tag} is missing or not numeric") from exc
    if values.shape != (n,):
        raise DicomError(f"{s.where}: tag {tag} has {values.size} values, expected {n}")
    return values


def _padding(s: _Slice) -> tuple[int, int] | None:
    """The stored values PixelPaddingValue (to PixelPaddingRangeLimit) marks as no data."""
    if s.ds.get("PixelPaddingValue") is None:
        return None
    bits = int(s.ds.get("BitsAllocated", 16) or 16)
    signed = int(s.ds.get("PixelRepresentation", 0) or 0) == 1
    bounds = []
    for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
        value = s.ds.get(keyword)
        if value is None:   # no range limit: the padding value alone
            value = s.ds.PixelPaddingValue
        try:
            v = int(value)
        except (TypeError, ValueError) as exc:
            raise DicomError(f"{s.path}: tag {keyword} is not an integer ({value!r})") from exc
        # Writers put the value in the wrong signedness: read it as the pixels are.
        if signed and v >= 2 ** (bits - 1):
            v -= 2 ** bits
        elif not signed and v < 0:
            v += 2 ** bits
        bounds.append(v)
    return min(bounds), max(bounds)


def _hu(s: _Slice, padding_hu: float) -> tuple[np.ndarray, tuple[int, int] | None, int]:
    """The slice in HU, the padding range it declares and how many of its pixels were padding
    (set to `padding_hu`)."""
    try:
        pixels = s.ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise DicomError(f"{s.path}: pixel data cannot be decoded, the file is damaged or its "
                         f"encoding unsupported ({one_line(exc)})") from exc
    if s.frame is not None and pixels.ndim == 3:
        pixels = pixels[s.frame]
    slope = float(_get(s, "RescaleSlope") or 1.0)
    intercept = float(_get(s, "RescaleIntercept") or 0.0)
    hu = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    bounds = _padding(s)
    if bounds is None:
        return hu, None, 0
    pad = (pixels >= bounds[0]) & (pixels <= bounds[1])
    hu[pad] = padding_hu
    return hu, bounds, int(pad.sum())


def _pixels(slices: list[_Slice], rows: int, cols: int,
            padding_hu: float) -> tuple[np.ndarray, list[str]]:
    hu = np.empty((len(slices), rows, cols), dtype=np.float32)
    padded: dict[tuple[int, int], int] = defaultdict(int)
    for k, s in enumerate(slices):
        plane, bounds, n = _hu(s, padding_hu)
        if plane.shape != (rows, cols):
            raise DicomError(f"{s.where}: pixel data shape {plane.shape} != Rows x Columns")
        hu[k] = plane
        if bounds is not None:
            padded[bounds] += n
    notes = [_padding_note(str(slices[0].path.parent), bounds, n, "voxels", padding_hu)
             for bounds, n in padded.items()]
    return hu, notes


def _padding_note(where: str, bounds: tuple[int, int], n: int, unit: str,
                  padding_hu: float) -> str:
    lo, hi = bounds
    return (f"{where}: {n} {unit} of PixelPaddingValue {lo if lo == hi else f'{lo}..{hi}'} "
            f"(stored; no data, outside the field of view) read as {padding_hu:g} HU "
            f"({PADDING_HU.describe()})")


def _series_label(slices: list[_Slice]) -> str:
    uid = _series_uid(slices[0].ds)
    return (f"{slices[0].path.parent}: series {uid}" if uid else
            f"{slices[0].path.parent}: series without SeriesInstanceUID")


def _check_same_plane(slices: list[_Slice], iop: np.ndarray, spacing_rc: np.ndarray) -> None:
    first = slices[0]
    uid, size = _series_uid(first.ds), (int(first.ds.Rows), int(first.ds.Columns))
    for s in slices[1:]:
        if _series_uid(s.ds) != uid:
            raise DicomError(f"{s.path}: belongs to another series than {first.path}")
        if np.abs(_vector(s, "ImageOrientationPatient", 6) - iop).max() > ORIENTATION_TOL:
            raise DicomError(f"{s.where}: ImageOrientationPatient differs from {first.where}")
        if np.abs(_vector(s, "PixelSpacing", 2) - spacing_rc).max() > 1e-6:
            raise DicomError(f"{s.where}: PixelSpacing differs from {first.where}")
        if (int(s.ds.Rows), int(s.ds.Columns)) != size:
            raise DicomError(f"{s.path}: image size differs from {first.path}")


def _stack(slices: list[_Slice], normal: np.ndarray,
           pixel_mm: float) -> tuple[list[_Slice], np.ndarray, float]:
    """The slices sorted along the normal, their positions and the slice spacing; an error on
    a duplicate, a gap or a gantry tilt."""
    positions = np.array([_vector(s, "ImagePositionPatient", 3) for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    positions, along = positions[order], along[order]
    steps = np.diff(along)
    if np.any(steps < 1e-6):
        dup = int(np.argmin(steps))
        raise DicomError(f"{slices[dup + 1].where}: same slice position as {slices[dup].where}")
    k, offset, angle = stack_tilt(positions, normal)
    if offset > TILT_TOL_PX * pixel_mm:
        raise DicomError(
            f"{_series_label(slices)}: gantry tilt of {angle:.2f} degrees ({slices[k].where} "
            f"lies {offset:.2f} mm across the slice plane from where a slice stack along the "
            "plane's normal puts it); the kit does not resample tilted series: resample it onto "
            "an untilted grid first")
    dz = float(np.median(steps))
    bad = np.abs(steps - dz) > SPACING_TOL * dz + 1e-3
    if np.any(bad):
        i = int(np.argmax(bad))
        raise DicomError(f"{slices[i + 1].where}: slice gap of {steps[i]:.3f} mm after "
                         f"{slices[i].where} (series spacing {dz:.3f} mm): a slice is "
                         "missing or misplaced")
    return slices, positions, dz


def read_series(files: Iterable[Path], *, pixels: bool = True,
                padding_hu: float = PADDING_HU.value) -> Volume:
    """One CT series (all files of one SeriesInstanceUID) as a HU volume with its geometry;
    with pixels=False only the headers are read (hu is None). Pixels PixelPaddingValue marks
    are read as `padding_hu`."""
    read = [_read(Path(p), pixels=pixels) for p in files]
    if not read:
        raise DicomError("empty series: no DICOM files given")
    for s in read:
        _check_ct_image(s)
    slices = [f for s in read for f in _frames(s)]
    for s in slices:
        for tag in REQUIRED:
            if tag != "PixelData" and _get(s, tag) is None:
                raise DicomError(f"{s.where}: required tag {tag} is missing")
    if len(slices) < 2:
        raise DicomError(f"{_series_label(slices)} has 1 slice ({slices[0].where}); a volume "
                         "needs at least 2 slices")
    first = slices[0]
    iop = _vector(first, "ImageOrientationPatient", 6)
    spacing_rc = _vector(first, "PixelSpacing", 2)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1) > 1e-3 or abs(row_dir @ col_dir) > 1e-3:
        raise DicomError(f"{first.where}: ImageOrientationPatient {iop.tolist()} is not two "
                         "orthonormal direction cosines")
    _check_same_plane(slices, iop, spacing_rc)
    slices, positions, dz = _stack(slices, normal, float(spacing_rc.min()))
    rows, cols = int(first.ds.Rows), int(first.ds.Columns)
    hu, notes = _pixels(slices, rows, cols, padding_hu) if pixels else (None, [])
    # PixelSpacing is (between rows, between columns) = (j, i) spacing.
    geometry = Geometry(origin=positions[0], spacing=np.array([spacing_rc[1], spacing_rc[0], dz]),
                        direction=np.stack([row_dir, col_dir, normal], axis=1),
                        shape=(len(slices), rows, cols))
    files_in_order = list(dict.fromkeys(s.path for s in slices))
    sha = {s.path: s.sha256 for s in slices}
    digest = (hashlib.sha256("".join(sha[p] for p in files_in_order).encode()).hexdigest()
              if pixels else "")
    return Volume(hu, geometry, _series_uid(first.ds), files_in_order, digest, notes)


def single_series_files(directory: Path, notes: list[str] | None = None) -> list[Path]:
    """The images of the one CT series under `directory`; an error naming it when there are
    none or several. Skipped non-image files get a line in `notes`."""
    skipped: list[str] = []
    groups = _scan(directory, skipped)
    if notes is not None:
        notes.extend(skipped)
    if not groups:
        raise DicomError(f"{directory}: no DICOM images ({len(skipped)} non-image DICOM "
                         f"file(s) skipped; the first: {skipped[0]})" if skipped else
                         f"{directory}: no DICOM files")
    if len(groups) > 1:
        sizes = ", ".join(f"{uid or '(no SeriesInstanceUID)'} ({len(g)} files, "
                          f"{g[0].ds.get('Modality', '') or 'no Modality'})"
                          for uid, g in groups.items())
        raise DicomError(f"{directory}: {len(groups)} series found ({sizes}); expected one")
    return [s.path for s in next(iter(groups.values()))]


def read_single_series(directory: Path, *, pixels: bool = True,
                       padding_hu: float = PADDING_HU.value) -> Volume:
    notes: list[str] = []
    volume = read_series(single_series_files(directory, notes), pixels=pixels,
                         padding_hu=padding_hu)
    volume.notes[:0] = notes
    return volume


def _ct_slice(s: _Slice, *, pixels: bool, padding_hu: float) -> CtSlice:
    """A CT image file as one slice, checked as read_series checks each of its files."""
    _check_ct_image(s)
    frames = _frames(s)
    if len(frames) != 1:
        raise DicomError(f"{s.path}: {len(frames)} frames in one file, expected one slice")
    s = frames[0]
    for tag in ("Rows", "Columns"):
        if s.ds.get(tag) is None:
            raise DicomError(f"{s.where}: required tag {tag} is missing")
    shape = (int(s.ds.Rows), int(s.ds.Columns))
    spacing = (tuple(float(v) for v in _vector(s, "PixelSpacing", 2))
               if _get(s, "PixelSpacing") is not None else None)
    number = s.ds.get("InstanceNumber")
    try:
        instance = int(number) if number not in (None, "") else None
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{s.path}: tag InstanceNumber is not an integer ({number!r})") from exc
    if not pixels:
        return CtSlice(s.path, None, shape, spacing, instance)
    hu, bounds, n = _hu(s, padding_hu)
    if hu.shape != shape:
        raise DicomError(f"{s.where}: pixel data shape {hu.shape} != Rows x Columns {shape}")
    notes = [] if bounds is None else [_padding_note(s.where, bounds, n, "pixels", padding_hu)]
    return CtSlice(s.path, hu, shape, spacing, instance, notes)


def read_ct_slice(path: Path, *, padding_hu: float = PADDING_HU.value) -> CtSlice:
    """One CT image file on its own, with the checks read_series gives each file (a CT image,
    not cut short); pixels PixelPaddingValue marks are read as `padding_hu`, with a note."""
    return _ct_slice(_read(Path(path), pixels=True), pixels=True, padding_hu=padding_hu)


def read_ct_slice_headers(files: Iterable[Path],
                          notes: list[str] | None = None) -> list[CtSlice]:
    """The headers (hu None) of CT image files read one by one, each checked as by
    read_ct_slice; a DICOMDIR or another non-image object is skipped with a line in `notes`."""
    read = (_image(Path(p), notes) for p in files)
    return [_ct_slice(s, pixels=False, padding_hu=PADDING_HU.value) for s in read
            if s is not None]


def write_ct_series(dest: Path, hu: np.ndarray, geometry: Geometry, *, patient_id: str,
                    study_uid: str | None = None, series_uid: str | None = None,
                    name_pattern: str = "1-{n:03d}.dcm", description: str = "",
                    transfer_syntax: str = ExplicitVRLittleEndian) -> list[Path]:
    """Write `hu` (k, j, i) as a CT Image Storage series, one file per slice.

    Stored values are HU + 1024 (uint16, 12 bits) with RescaleIntercept -1024, as scanners do.
    `name_pattern` gets n (1-based slice number). `transfer_syntax` is uncompressed explicit
    VR little endian or JPEG 2000 lossless (as many archives store CT).
    """
    if transfer_syntax not in (ExplicitVRLittleEndian, JPEG2000Lossless):
        raise ValueError(f"transfer syntax {transfer_syntax}: the writer writes "
                         f"{ExplicitVRLittleEndian} or {JPEG2000Lossless}")
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
        meta.TransferSyntaxUID = transfer_syntax
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
        if transfer_syntax == JPEG2000Lossless:
            ds.PixelData = encapsulate([_jpeg2000_lossless(stored[k])])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = stored[k].tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _jpeg2000_lossless(plane: np.ndarray) -> bytes:
    """A uint16 plane as a JPEG 2000 codestream, lossless (OpenJPEG's reversible wavelet)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(plane).save(buf, format="JPEG2000", no_jp2=True, irreversible=False)
    return buf.getvalue()
