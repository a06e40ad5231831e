"""Shin's RGB pictures in Caffe's channel order: the axial view (LN, Fig. 1) and the lung
window (ILD, Fig. 4) are the pictures' R, so they land in Caffe channel 2, which the BVLC
ImageNet models read as red; each manifest names what every channel holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtl import config
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.datasets.manifest import read_manifest
from medtl.studies.shin2016.ild import dataset as ild_dataset
from medtl.studies.shin2016.ild.phantoms import write_collection as write_ild
from medtl.studies.shin2016.ln import dataset as ln_dataset
from medtl.studies.shin2016.ln.phantoms import PatientTruth, write_patient

SHAPE = (44, 72, 72)                 # slices, rows, columns
SPACING = np.array([2.0, 2.0, 2.5])  # x, y, z mm


def _ramp_patient(root: Path, n: int) -> None:
    """A volume whose HU grows along x and z but not along y: with unrotated views its axial
    plane (x, y) is constant down every column, its sagittal plane (y, z) constant along
    every row, and its coronal plane (x, z) varies both ways."""
    origin = -(np.array(SHAPE[::-1]) - 1) * SPACING / 2
    g = Geometry(origin, SPACING, np.eye(3), SHAPE)
    k, _, i = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    hu = (50.0 + 6.0 * (i - SHAPE[2] // 2) + 6.0 * (k - SHAPE[0] // 2)).astype(np.float32)
    rng = np.random.default_rng(n)
    near = lambda: rng.uniform(-4, 4, 3)  # noqa: E731
    node = near()
    truth = PatientTruth(f"MED_LYMPH_{n:03d}", g, node[None], np.array([[4.0, 5.0, 6.0]]),
                         positives=[(node + near() / 4, 0) for _ in range(2)],
                         negatives=[(near(), "tissue") for _ in range(3)])
    write_patient(root, hu, truth, "med")


def _variation(image: np.ndarray) -> tuple[float, float]:
    """Mean absolute step down the rows and along the columns."""
    a = image.astype(float)
    return float(np.abs(np.diff(a, axis=0)).mean()), float(np.abs(np.diff(a, axis=1)).mean())


def test_ln_axial_view_lands_in_caffe_channel_2_as_the_manifest_says(tmp_path):
    root = tmp_path / "CT_Lymph_Nodes"
    for n in (1, 2, 3):
        _ramp_patient(root, n)
    cfg = config.from_mapping(ln_dataset.LnConfig, {
        "train_views_per_candidate": 2, "test_views_per_candidate": 3,
        "val_views_per_candidate": 2, "only_folds": [1], "rotate": False,
        "max_translation_mm": 0.0, "fov_mm": [35.0, 40.0]})
    dest = ln_dataset.build(root, tmp_path / "ln", cfg, progress=False)
    notes = read_manifest(dest)["notes"]
    assert notes["channels"] == {"0 (B)": "sagittal plane", "1 (G)": "coronal plane",
                                 "2 (R)": "axial plane"}
    assert "Fig. 1" in notes["channel_rule"]["picture"]
    assert "convert_imageset" in notes["channel_rule"]["caffe_order"]["source"]
    records = list(read_lmdb(dest / "fold1" / "test_64_lmdb"))
    assert len(records) >= 9
    for _, image, _ in records:
        down = {c: _variation(image[c])[0] for c in range(3)}
        along = {c: _variation(image[c])[1] for c in range(3)}
        assert down[2] < 0.05 < 0.8 < along[2]          # axial: constant down each column
        assert along[0] < 0.05 < 0.8 < down[0]          # sagittal: constant along each row
        assert min(down[1], along[1]) > 0.8             # coronal: varies both ways


@pytest.fixture(scope="module")
def ild_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ild_channels") / "ILD_DB"
    write_ild(root, patients=6, slices_per_patient=3, size=128, seed=2)
    return root


@pytest.mark.parametrize("level", ["slice", "patch"])
def test_ild_lung_window_lands_in_caffe_channel_2_as_the_manifest_says(ild_root, tmp_path,
                                                                      level):
    cfg = config.from_mapping(ild_dataset.IldConfig, {
        "level": level, "only_folds": [1], "augmentations_per_slice": 1, "slice_size": 32,
        "patch_size": 16, "patches_per_roi": 2, "patch_output_size": 32})
    dest = ild_dataset.build(ild_root, tmp_path / level, cfg, progress=False)
    notes = read_manifest(dest)["notes"]
    assert notes["channels"] == {"0 (B)": "low-attenuation window [-1400, -950] HU",
                                 "1 (G)": "high-attenuation window [-160, 240] HU",
                                 "2 (R)": "lung window [-1400, -200] HU"}
    assert "Fig. 4" in notes["channel_rule"]["picture"]
    images = np.stack([im for _, im, _ in read_lmdb(dest / "fold1" / "test_32_lmdb")])
    low, high, lung = (images[:, c].astype(int) for c in range(3))
    # for every HU the low window is the brightest, the high window the darkest and the
    # lung window in between (they all rise with HU; low saturates first, high starts last)
    assert (low >= lung).all() and (lung >= high).all()
    assert low.mean() > lung.mean() > high.mean()
