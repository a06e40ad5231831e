"""The DICOM reader on real-world faults: gantry tilt, non-CT images, damaged files, pixel
padding, single slices, DICOMDIRs and other non-image files, an empty SeriesInstanceUID.

Every series is written by the kit's own writer and then corrupted as real archives are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import write_dicomdir
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from scipy.spatial.transform import Rotation

from medtl.datasets.formats.dicom import (
    PADDING_HU,
    DicomError,
    read_series,
    read_single_series,
    write_ct_series,
)
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.images import ImageError, read_volume

SHAPE = (8, 20, 24)


def _geometry(shape=SHAPE, direction=None) -> Geometry:
    return Geometry(np.array([-40.0, 25.0, -310.0]), np.array([0.8, 0.8, 2.5]),
                    np.eye(3) if direction is None else direction, shape)


def _hu(shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1500, shape).astype(np.float32)


def _series(folder: Path, shape=SHAPE, **kw) -> list[Path]:
    return write_ct_series(folder, _hu(shape), _geometry(shape), patient_id="P", **kw)


def _edit(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    if "SOPClassUID" in values:
        ds.file_meta.MediaStorageSOPClassUID = values["SOPClassUID"]
    ds.save_as(path)


# 1. Gantry tilt -------------------------------------------------------------------------------

def _tilt(files: list[Path], degrees: float) -> None:
    """Shift each slice along y by tan(tilt) x its distance along z, as a tilted gantry does."""
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        shift = np.tan(np.radians(degrees)) * 2.5 * k
        ds.ImagePositionPatient = [f"{x:.6f}", f"{y + shift:.6f}", f"{z:.6f}"]
        ds.save_as(path)


def test_gantry_tilted_series_is_refused_naming_series_and_angle(tmp_path):
    files = _series(tmp_path / "s")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    _tilt(files, 15.0)
    for pixels in (True, False):
        with pytest.raises(DicomError, match=rf"{tmp_path / 's'}: series {uid}: gantry tilt of "
                           r"15\.00 degrees") as info:
            read_series(files, pixels=pixels)
        assert "\n" not in str(info.value)
    with pytest.raises(ImageError, match=r"gantry tilt of 15\.00 degrees"):
        read_volume(tmp_path / "s")


def test_tilt_of_an_oblique_series_is_measured_against_its_own_normal(tmp_path):
    oblique = Rotation.from_euler("zx", [20, 5], degrees=True).as_matrix()
    g = _geometry(direction=oblique)
    files = write_ct_series(tmp_path / "s", _hu(), g, patient_id="P")
    assert read_series(files).geometry.shape == SHAPE      # oblique but untilted: accepted
    for k, path in enumerate(files):                        # step along the row direction
        ds = pydicom.dcmread(path)
        p = np.array([float(v) for v in ds.ImagePositionPatient]) + oblique[:, 0] * 0.9 * k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in p]
        ds.save_as(path)
    with pytest.raises(DicomError, match=r"gantry tilt of 19\.80 degrees"):
        read_series(files)


def test_rounding_of_slice_positions_is_not_a_tilt(tmp_path):
    files = _series(tmp_path / "s")
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        p = np.array([float(v) for v in ds.ImagePositionPatient]) + (-1) ** k * 2e-3
        ds.ImagePositionPatient = [f"{v:.3f}" for v in p]
        ds.save_as(path)
    assert read_series(files).geometry.shape == SHAPE


# 2. Non-CT images ----------------------------------------------------------------------------

def test_mr_series_and_one_mr_slice_are_refused_naming_the_file(tmp_path):
    files = _series(tmp_path / "mr")
    for path in files:
        _edit(path, SOPClassUID=MRImageStorage, Modality="MR")
    with pytest.raises(DicomError, match=rf"{files[0]}: MR Image Storage \(Modality MR\), "
                       "not a CT image"):
        read_single_series(tmp_path / "mr")
    files = _series(tmp_path / "ct")
    _edit(files[4], SOPClassUID=MRImageStorage, Modality="MR")
    with pytest.raises(DicomError, match=rf"{files[4]}: MR Image Storage"):
        read_single_series(tmp_path / "ct", pixels=False)


def test_ct_class_with_another_modality_is_refused(tmp_path):
    files = _series(tmp_path / "s")
    _edit(files[2], Modality="PT")
    with pytest.raises(DicomError, match=rf"{files[2]}: Modality PT in a CT Image Storage file"):
        read_series(files)


def test_secondary_capture_is_refused_with_a_clear_message(tmp_path):
    files = _series(tmp_path / "s")
    for path in files:
        _edit(path, SOPClassUID=SecondaryCaptureImageStorage)
    with pytest.raises(DicomError, match=rf"{files[0]}: Secondary Capture Image Storage .*"
                       "screen capture"):
        read_series(files)


def _enhanced(path: Path, hu: np.ndarray, g: Geometry) -> None:
    """`hu` as one Enhanced CT Image Storage file (shared and per-frame functional groups)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "CT", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = hu.shape[1], hu.shape[2], hu.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    measures, orient, rescale, shared = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [f"{g.spacing[1]}", f"{g.spacing[0]}"]
    orient.ImageOrientationPatient = [f"{v:.6f}" for v in np.r_[g.direction[:, 0],
                                                                g.direction[:, 1]]]
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = "-1024", "1", "HU"
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orient]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in range(hu.shape[0]):
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in g.index_to_world([0, 0, k])]
        item.PlanePositionSequence = [position]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames[::-1]      # frames stored top to bottom
    ds.PixelData = np.rint(hu[::-1] + 1024).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_ct_is_read_frame_by_frame_like_the_classic_series(tmp_path):
    hu, g = _hu(), _geometry()
    (tmp_path / "e").mkdir()
    _enhanced(tmp_path / "e" / "volume.dcm", hu, g)
    classic = read_series(_series(tmp_path / "c"))
    vol = read_single_series(tmp_path / "e")
    np.testing.assert_array_equal(vol.hu, classic.hu)
    for key in ("origin", "spacing", "direction"):
        np.testing.assert_allclose(getattr(vol.geometry, key), getattr(classic.geometry, key),
                                   atol=1e-6)
    assert vol.files == [tmp_path / "e" / "volume.dcm"]
    assert read_single_series(tmp_path / "e", pixels=False).geometry.shape == SHAPE


# 3. Damaged and truncated files --------------------------------------------------------------

def _cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.mark.parametrize("where", [60, 140, 200, 400, 700, 900])
def test_file_cut_in_its_header_is_called_damaged(tmp_path, where):
    files = _series(tmp_path / "s")
    _cut(files[3], where)
    for pixels in (True, False):
        with pytest.raises(DicomError, match=rf"{files[3]}: damaged or truncated"):
            read_single_series(tmp_path / "s", pixels=pixels)


@pytest.mark.parametrize("missing", [1, 100, 959])
def test_file_cut_in_its_pixel_data_is_called_damaged(tmp_path, missing):
    files = _series(tmp_path / "s")
    _cut(files[3], files[3].stat().st_size - missing)
    for pixels in (True, False):    # the headers alone already show it
        with pytest.raises(DicomError, match=rf"{files[3]}: damaged or truncated: .*ends "
                           rf"{missing} bytes? short of its pixel data"):
            read_single_series(tmp_path / "s", pixels=pixels)


def test_jpeg2000_series_reads_exactly_and_a_cut_slice_is_called_damaged(tmp_path):
    hu = np.fromfunction(lambda k, j, i: 40 * k + 7 * j - 3 * i - 500, SHAPE).astype(np.float32)
    files = write_ct_series(tmp_path / "s", hu, _geometry(), patient_id="P",
                            transfer_syntax=JPEG2000Lossless)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == JPEG2000Lossless
    np.testing.assert_array_equal(read_single_series(tmp_path / "s").hu, hu)
    raw = files[5].read_bytes()
    start = raw.rindex(b"\xe0\x7f\x10\x00")        # (7FE0,0010) Pixel Data
    for size in (len(raw) - 8, len(raw) - 9, (start + len(raw)) // 2, start + 14, start + 20):
        files[5].write_bytes(raw[:size])
        for pixels in (True, False):
            with pytest.raises(DicomError, match=rf"{files[5]}: damaged or truncated: .*"
                               "compressed pixel data"):
                read_single_series(tmp_path / "s", pixels=pixels)


# 4. Values and folders -----------------------------------------------------------------------

def _pad_outside_fov(files: list[Path], pad: int, *, limit: int | None = None) -> np.ndarray:
    """Store the slices signed, with `pad` (or pad..limit) outside a circular field of view;
    returns the mask of padded pixels."""
    r, c = np.mgrid[0:SHAPE[1], 0:SHAPE[2]]
    outside = (r - SHAPE[1] / 2) ** 2 + (c - SHAPE[2] / 2) ** 2 > 9.5 ** 2
    for path in files:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int16)
        stored[outside] = pad if limit is None else np.linspace(pad, limit, outside.sum())
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
        ds.PixelData = stored.tobytes()
        ds.add_new("PixelPaddingValue", "SS", pad)
        if limit is not None:
            ds.add_new("PixelPaddingRangeLimit", "SS", limit)
        ds.save_as(path)
    return outside


@pytest.mark.parametrize("limit", [None, -1500])
def test_pixel_padding_becomes_air_and_is_noted(tmp_path, limit):
    hu = _hu()
    files = write_ct_series(tmp_path / "s", hu, _geometry(), patient_id="P")
    outside = _pad_outside_fov(files, -2971, limit=limit)
    vol = read_single_series(tmp_path / "s")
    assert PADDING_HU.value == -1024.0 and PADDING_HU.is_assumed
    assert np.all(vol.hu[:, outside] == -1024.0)
    np.testing.assert_array_equal(vol.hu[:, ~outside], hu[:, ~outside])
    assert any("PixelPaddingValue" in n and "-1024" in n for n in vol.notes)


def test_single_slice_is_not_a_volume(tmp_path):
    files = _series(tmp_path / "s", shape=(1, 20, 24))
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    with pytest.raises(DicomError, match=rf"{tmp_path / 's'}: series {uid} has 1 slice "
                       r".*at least 2"):
        read_single_series(tmp_path / "s")


def _report(path: Path, series_uid: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = BasicTextSRStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "SR", series_uid
    ds.save_as(path, enforce_file_format=True)


def test_dicomdir_and_reports_in_a_series_folder_are_skipped_with_a_note(tmp_path):
    files = _series(tmp_path / "s")
    dicomdir = write_dicomdir(tmp_path / "s", files, tmp_path / "fs")
    _report(tmp_path / "s" / "report.dcm", pydicom.dcmread(files[0]).SeriesInstanceUID)
    vol = read_single_series(tmp_path / "s")
    assert vol.files == files and vol.hu.shape == SHAPE
    assert any(str(dicomdir) in n and "DICOMDIR" in n for n in vol.notes)
    assert any("report.dcm" in n and "Basic Text SR" in n for n in vol.notes)
    for path in files:
        path.unlink()
    with pytest.raises(DicomError, match=r"no DICOM images \(2 non-image DICOM file\(s\) "
                       "skipped; the first: .*DICOMDIR: skipped, a DICOMDIR"):
        read_single_series(tmp_path / "s")


def test_empty_series_uid_is_accepted_when_it_is_the_only_series(tmp_path):
    files = _series(tmp_path / "s")
    for path in files[:4]:
        _edit(path, SeriesInstanceUID="")
    for path in files[4:]:
        _edit(path, SeriesInstanceUID=None)
    vol = read_single_series(tmp_path / "s")
    assert vol.series_uid == "" and vol.hu.shape == SHAPE
    _series(tmp_path / "s" / "other")
    with pytest.raises(DicomError, match=r"2 series found .*no SeriesInstanceUID"):
        read_single_series(tmp_path / "s")
