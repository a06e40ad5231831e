"""A truncated or damaged NIfTI / MetaImage / NRRD volume is refused with a message that names
the file and says it is damaged or truncated (issue 12 item 3); before, a .nii.gz cut to half
was read with its missing half filled with 0 HU."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.images import ImageError, read_volume, write_nifti
from medtl.studies.tajbakhsh2016.phantoms import write_pe_collection


def _cut(path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_a_phantom_nii_gz_cut_to_half_is_refused(tmp_path):
    write_pe_collection(tmp_path / "c", patients=1, shape=(16, 24, 24), dicom_every=0)
    volume = tmp_path / "c" / "volumes" / "patient_00.nii.gz"
    assert read_volume(volume).hu.min() < -500   # the intact phantom reads
    _cut(volume, 0.5)
    with pytest.raises(ImageError, match=rf"^{volume}: truncated"):
        read_volume(volume)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.mha", "v.nrrd"])
def test_every_volume_format_cut_short_is_refused(tmp_path, name):
    g = Geometry(np.zeros(3), np.ones(3), np.eye(3), (10, 12, 14))
    path = write_nifti(tmp_path / name, np.full(g.shape, 100.0), g)
    _cut(path, 0.6)
    with pytest.raises(ImageError, match=rf"^{path}: (truncated|damaged)"):
        read_volume(path)


def test_a_gzip_stream_with_a_bad_checksum_is_damaged(tmp_path):
    g = Geometry(np.zeros(3), np.ones(3), np.eye(3), (6, 8, 8))
    path = write_nifti(tmp_path / "v.nii.gz", np.arange(384.0).reshape(g.shape), g)
    raw = gzip.decompress(path.read_bytes())
    packed = bytearray(gzip.compress(raw))
    packed[-8] ^= 0xFF                                       # the CRC32 of the trailer
    path.write_bytes(bytes(packed))
    with pytest.raises(ImageError, match=rf"^{path}: damaged"):
        read_volume(path)


def test_a_nii_shorter_than_its_header_says_but_whole_gzip_is_truncated(tmp_path):
    """A file truncated before it was compressed: the gzip stream is whole, the data are not."""
    g = Geometry(np.zeros(3), np.ones(3), np.eye(3), (6, 8, 8))
    path = write_nifti(tmp_path / "v.nii.gz", np.full(g.shape, 7.0), g)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:len(raw) - 100]))
    with pytest.raises(ImageError, match=rf"^{path}: truncated: .*header"):
        read_volume(path)
