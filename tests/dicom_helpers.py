"""DICOM files the defensive-reading tests put beside the kit's phantom series."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet


def write_dicomdir(folder: Path, files: list[Path], work: Path) -> Path:
    """A DICOMDIR indexing `files`, put in `folder` as media exports have it."""
    fs = FileSet()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
        fs.add(ds)
    fs.write(work)
    return Path(shutil.copy(work / "DICOMDIR", folder / "DICOMDIR"))
