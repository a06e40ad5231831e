"""Shin 2016 ILD and LN sources read through the core DICOM checks: a non-CT slice and a
damaged slice stop the build naming the file, PixelPaddingValue is read as air, and a DICOMDIR
in a patient folder is skipped; skipped files and padding are recorded in the manifest.

Every fault is made in a copy of the kit's own phantoms, as real archives have them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import write_dicomdir
from pydicom.uid import MRImageStorage

from medtl import config
from medtl.datasets.formats.dicom import PADDING_HU
from medtl.datasets.manifest import read_manifest
from medtl.studies.shin2016.ild import dataset as ild_dataset
from medtl.studies.shin2016.ild import reader as ild_io
from medtl.studies.shin2016.ild.phantoms import write_collection as write_ild
from medtl.studies.shin2016.ln import dataset as ln_dataset
from medtl.studies.shin2016.ln import tcia as tcia_ln
from medtl.studies.shin2016.ln.phantoms import write_collection as write_ln

ILD_FAST = {"augmentations_per_slice": 1, "slice_size": 32, "only_folds": [1]}
LN_FAST = {"train_views_per_candidate": 2, "test_views_per_candidate": 1,
           "val_views_per_candidate": 1, "output_sizes": [32]}
PAD = -2000   # stored; with RescaleIntercept -1024 it would read as -3024 HU


@pytest.fixture(scope="module")
def ild_db(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ild") / "ILD_DB"
    write_ild(root, patients=6, slices_per_patient=3, size=64, seed=2)
    return root


@pytest.fixture(scope="module")
def ln_db(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tcia") / "CT_Lymph_Nodes"
    write_ln(root, patients=3, regions=("med",), seed=5, shape=(40, 64, 64), n_false=12)
    return root


def _copy(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / source.name))


def _slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("CT-*.dcm")) or sorted(folder.rglob("*.dcm"))


def _edit(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    if "SOPClassUID" in values:
        ds.file_meta.MediaStorageSOPClassUID = values["SOPClassUID"]
    ds.save_as(path)


def _pad_corners(path: Path) -> np.ndarray:
    """Store the slice signed with PixelPaddingValue PAD outside a centred circle, as scanners
    mark what lies outside the reconstructed field of view; returns that mask."""
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.int16)
    r, c = np.mgrid[0:stored.shape[0], 0:stored.shape[1]]
    half = stored.shape[0] / 2
    outside = (r - half + 0.5) ** 2 + (c - half + 0.5) ** 2 > half ** 2
    stored[outside] = PAD
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
    ds.PixelData = stored.tobytes()
    ds.add_new("PixelPaddingValue", "SS", PAD)
    ds.save_as(path)
    return outside


def _refused(root: Path, dest: Path, match: str) -> None:
    """The scan and the build both stop with one line matching `match`; nothing is left."""
    with pytest.raises(ild_io.IldDataError, match=match) as info:
        ild_io.scan(root)
    assert "\n" not in str(info.value)
    with pytest.raises(ild_io.IldDataError, match=match):
        ild_dataset.build(root, dest, config.from_mapping(ild_dataset.IldConfig, ILD_FAST),
                          progress=False)
    assert not dest.exists()


# ILD: slices read one by one -------------------------------------------------------------------

def test_ild_mr_slice_is_refused_naming_the_file(ild_db, tmp_path):
    root = _copy(ild_db, tmp_path)
    bad = _slices(root / "002")[1]
    _edit(bad, SOPClassUID=MRImageStorage, Modality="MR")
    _refused(root, tmp_path / "out", rf"{re.escape(str(bad))}: MR Image Storage \(Modality MR\), "
             "not a CT image: its values are not Hounsfield units")


def test_ild_ct_slice_of_another_modality_is_refused(ild_db, tmp_path):
    root = _copy(ild_db, tmp_path)
    bad = _slices(root / "004")[0]
    _edit(bad, Modality="PT")
    _refused(root, tmp_path / "out", rf"{re.escape(str(bad))}: Modality PT in a CT Image "
             "Storage file")


@pytest.mark.parametrize("cut", ["pixels", "header"])
def test_ild_truncated_slice_is_called_damaged_naming_the_file(ild_db, tmp_path, cut):
    root = _copy(ild_db, tmp_path)
    bad = _slices(root / "003")[2]
    raw = bad.read_bytes()
    bad.write_bytes(raw[:-100] if cut == "pixels" else raw[:400])
    why = r".*ends 100 bytes short of its pixel data" if cut == "pixels" else ""
    _refused(root, tmp_path / "out", rf"{re.escape(str(bad))}: damaged or truncated{why}")


def test_ild_padding_is_air_and_a_dicomdir_is_skipped_both_in_the_manifest(ild_db, tmp_path):
    root = _copy(ild_db, tmp_path)
    padded = _slices(root / "001")[1]
    before, _ = ild_io.read_slice(padded)
    outside = _pad_corners(padded)
    hu, _ = ild_io.read_slice(padded)
    assert PADDING_HU.value == -1024.0 and np.all(hu[outside] == -1024.0)
    np.testing.assert_array_equal(hu[~outside], before[~outside])
    slices = _slices(root / "003")
    dicomdir = write_dicomdir(root / "003", slices, tmp_path / "fs")
    patients = {p.pid: p for p in ild_io.scan(root)}
    assert patients["003"].slice_files == slices           # the DICOMDIR is no slice 4
    assert any(str(dicomdir) in n and "DICOMDIR" in n for n in patients["003"].notes)
    dest = ild_dataset.build(root, tmp_path / "out",
                             config.from_mapping(ild_dataset.IldConfig, ILD_FAST),
                             progress=False)
    dicom = read_manifest(dest)["notes"]["dicom"]
    assert sorted(dicom) == ["001", "003"]
    assert any(str(padded) in n and f"PixelPaddingValue {PAD}" in n and "-1024 HU" in n
               for n in dicom["001"])
    assert any(str(dicomdir) in n and "skipped, a DICOMDIR" in n for n in dicom["003"])


def test_ild_manifest_has_no_dicom_notes_when_nothing_was_skipped_or_padded(ild_db, tmp_path):
    dest = ild_dataset.build(ild_db, tmp_path / "out",
                             config.from_mapping(ild_dataset.IldConfig, ILD_FAST),
                             progress=False)
    assert "dicom" not in read_manifest(dest)["notes"]


# LN: one series per patient ---------------------------------------------------------------------

def test_ln_dicomdir_and_padding_are_recorded_in_the_manifest(ln_db, tmp_path):
    root = _copy(ln_db, tmp_path)
    pids = tcia_ln.patient_ids(root, "med")
    series = _slices(root / pids[0])
    dicomdir = write_dicomdir(series[0].parent, series, tmp_path / "fs")
    for path in _slices(root / pids[2]):
        _pad_corners(path)
    patients = {p.pid: p for p in tcia_ln.scan(root, "med")}
    assert patients[pids[0]].series_files == series
    assert any(str(dicomdir) in n for n in patients[pids[0]].dicom_notes)
    dest = ln_dataset.build(root, tmp_path / "out",
                            config.from_mapping(ln_dataset.LnConfig, LN_FAST), progress=False)
    dicom = read_manifest(dest)["notes"]["dicom"]
    assert sorted(dicom) == [pids[0], pids[2]]
    assert any(str(dicomdir) in n and "skipped, a DICOMDIR" in n for n in dicom[pids[0]])
    assert any(f"PixelPaddingValue {PAD}" in n and "-1024 HU" in n for n in dicom[pids[2]])


def test_ild_patient_folder_nested_one_level_deeper_is_named_not_dropped(ild_db, tmp_path):
    """Some copies of the database nest patients one level deeper: those patients must not
    vanish from the dataset without a word."""
    root = _copy(ild_db, tmp_path)
    nested = root / "003" / "HRCT"
    nested.mkdir()
    for item in list((root / "003").iterdir()):
        if item != nested:
            shutil.move(str(item), nested / item.name)
    with pytest.raises(ild_io.IldDataError, match=r"003: no DICOM slices directly inside, "
                                                  r"but a sub-folder"):
        ild_io.scan(root)
