"""The PE builder records what the DICOM reader skipped or read as air: a DICOMDIR in a
series folder and PixelPaddingValue pixels are named in the manifest, per patient."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.fileset import FileSet

from medtl.datasets.formats.images import read_volume
from medtl.studies.tajbakhsh2016 import applications as tajbakhsh_apps
from medtl.studies.tajbakhsh2016.apps.pe import PeConfig
from medtl.studies.tajbakhsh2016.phantoms import write_pe_collection

PAD = -2000


def _dicomdir(folder: Path, work: Path) -> Path:
    fs = FileSet()
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
        fs.add(ds)
    fs.write(work)
    return Path(shutil.copy(work / "DICOMDIR", folder / "DICOMDIR"))


def _pad_edges(folder: Path) -> None:
    """Every slice stored signed, its border rows PixelPaddingValue (outside the field of
    view)."""
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int16)
        stored[:2], stored[-2:] = PAD, PAD
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
        ds.PixelData = stored.tobytes()
        ds.add_new("PixelPaddingValue", "SS", PAD)
        ds.save_as(path)


def test_pe_manifest_names_a_skipped_dicomdir_and_padding(tmp_path):
    write_pe_collection(tmp_path / "c", patients=4, shape=(24, 32, 32), seed=2)
    volumes = tmp_path / "c" / "volumes"
    dicomdir = _dicomdir(volumes / "patient_01", tmp_path / "fs")
    _pad_edges(volumes / "patient_03")
    vol = read_volume(volumes / "patient_01")
    assert vol.files == 24 and any(str(dicomdir) in n and "DICOMDIR" in n for n in vol.notes)
    padded = read_volume(volumes / "patient_03")
    assert np.all(padded.hu[:, :2] == -1024.0)
    assert any(f"PixelPaddingValue {PAD}" in n for n in padded.notes)
    cfg = PeConfig(train_patches=40, patch_size=32, sample_px=16, rotations=3)
    dest = tajbakhsh_apps.build("pe", tmp_path / "c" / "candidates.csv", tmp_path / "ds", cfg,
                                progress=False)
    dicom = json.loads((dest / "manifest.json").read_text())["notes"]["dicom"]
    assert sorted(dicom) == ["patient_01", "patient_03"]
    assert any(str(dicomdir) in n and "skipped, a DICOMDIR" in n for n in dicom["patient_01"])
    assert any(f"PixelPaddingValue {PAD}" in n and "-1024 HU" in n for n in dicom["patient_03"])
