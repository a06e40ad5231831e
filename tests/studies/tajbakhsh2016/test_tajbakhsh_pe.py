"""Tajbakhsh PE datasets: vessel-aligned 2-channel patches from NIfTI / DICOM volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medtl import config
from medtl.datasets.check import check_dataset
from medtl.datasets.formats.candidates import read_candidates, write_candidates
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.images import write_nifti
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.studies.tajbakhsh2016 import applications as tajbakhsh_apps
from medtl.studies.tajbakhsh2016.apps.pe import SCHEMA, PeApp, PeConfig, vessel_frame
from medtl.studies.tajbakhsh2016.phantoms import write_pe_collection

AXIS = np.array([1.0, 1.0, 0.5]) / np.linalg.norm([1.0, 1.0, 0.5])


def test_vessel_frame_is_a_rotation_about_the_axis():
    for angle in (0.0, 0.7, 2.0):
        r = vessel_frame(AXIS, angle)
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(r[:, 2], AXIS)
        assert np.linalg.det(r) == pytest.approx(1.0)
    a, b = vessel_frame(AXIS, 0.0), vessel_frame(AXIS, np.pi / 2)
    np.testing.assert_allclose(b[:, 0], a[:, 1], atol=1e-12)


def test_54_variants_per_candidate_the_unrotated_planes_and_5_additional_rotations():
    # Sec. VI-B: rotating the planes around the vessel axis, "resulting in 5 additional
    # variations for each scale and translation": 6 orientations (the kit made 5)
    app = PeApp(PeConfig())
    assert PeConfig().rotations == 6
    prov = config.protocol_values(PeConfig())["rotations"]
    assert prov["value"] == 6 and "5 additional variations" in prov["source"]
    assert app.n == 3 * 3 * 6 == 54
    assert {app.variant(v)[0] for v in range(54)} == {10.0, 15.0, 20.0}
    assert {app.variant(v)[1] for v in range(54)} == {-0.2, 0.0, 0.2}
    assert sorted({app.variant(v)[2] for v in range(54)}) == [0, 30, 60, 90, 120, 150]


@pytest.fixture(scope="module")
def vessel(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A straight contrast-filled vessel (radius 2.5 mm) along AXIS, with a clot (3 to 5 mm
    along the axis from the candidate)."""
    root = tmp_path_factory.mktemp("vessel")
    g = Geometry(np.array([-20.0, -20.0, -16.0]), np.array([0.8, 0.8, 1.0]), np.eye(3),
                 (33, 51, 51))
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape), indexing="ij")
    world = g.index_to_world(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*g.shape, 3)
    centre = np.array([0.5, -0.3, 0.2])
    rel = world - centre
    along = rel @ AXIS
    dist = np.linalg.norm(rel - along[..., None] * AXIS, axis=-1)
    hu = np.where(dist <= 2.5, 300.0, -800.0)
    hu[(dist <= 2.5) & (along >= 3) & (along <= 5)] = 40.0
    write_nifti(root / "v.nii.gz", hu, g)
    write_candidates(root / "c.csv", [{
        "image": "v.nii.gz", "group": "p1", "candidate_id": "c1", "label": "pe",
        "cx": centre[0], "cy": centre[1], "cz": centre[2],
        "ax": AXIS[0] * 3, "ay": AXIS[1] * 3, "az": AXIS[2] * 3}])
    return root / "c.csv", centre


def test_patches_are_aligned_with_and_centred_on_the_vessel(vessel):
    csv_path, _ = vessel
    app = PeApp(PeConfig(patch_size=64, sample_px=64))
    (cand,) = read_candidates(csv_path, SCHEMA)
    variants = np.arange(54)
    source = app.load(cand.image, [(cand, "train", 1, variants)])
    patches = app.render(source, cand, "train", 1, variants).astype(float)
    assert patches.shape == (54, 3, 64, 64)
    # the picture [cross, longitudinal, longitudinal] in Caffe order: B, G longitudinal,
    # R (Caffe channel 2) the cross-section
    assert (patches[:, 0] == patches[:, 1]).all()      # the second channel repeated
    clots_seen = 0
    for v, p in zip(variants, patches, strict=True):
        size, shift, _ = app.variant(int(v))
        cross, longi = p[2], p[1]
        # the window's -100 HU floor (gray 0) lies near the middle of the vessel's edge
        ys, xs = np.nonzero(cross > 5)                 # the vessel's section: a centred disc
        assert abs(xs.mean() - 31.5) < 1 and abs(ys.mean() - 31.5) < 1
        # a section through the clot (40 HU, not 300) looks smaller: its edge is dimmer
        in_clot = 3.0 <= shift * size <= 5.0
        assert len(xs) == pytest.approx(np.pi * (2.5 * 64 / size) ** 2,
                                        rel=0.25 if in_clot else 0.2)
        cols = np.nonzero(longi.mean(0) > 5)[0]        # a vertical band through the centre
        assert abs(cols.mean() - 31.5) < 1
        assert len(cols) == pytest.approx(5.0 * 64 / size, rel=0.15)
        # the clot (3..5 mm along +axis) appears above the centre, moved by the shift
        column = longi[:, 31:33].mean(1)
        gap = np.nonzero(column < 100)[0]
        expect = 31.5 - (4.0 - shift * size) * 64 / size
        if 4 <= expect < 60:
            assert len(gap), f"variant {v}: the clot is missing"
            assert abs(gap.mean() - expect) < 2.0
            clots_seen += 1
    assert clots_seen >= 30


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pe")
    write_pe_collection(root / "c", patients=6, shape=(24, 32, 32), seed=2)
    cfg = PeConfig(train_patches=60, patch_size=32, sample_px=16, rotations=3)
    return tajbakhsh_apps.build("pe", root / "c" / "candidates.csv", root / "ds", cfg,
                                progress=False)


def test_pe_dataset_from_nifti_and_dicom_reads_back_through_caffe(dataset):
    report = check_dataset(dataset)
    assert report.ok, [d.problems for d in report.databases] + report.problems
    m = json.loads((dataset / "manifest.json").read_text())
    kinds = {s["kind"] for s in m["sources"]}
    assert {"volume"} <= kinds
    files = [s["files"] for s in m["sources"] if s["kind"] == "volume"]
    assert 1 in files and max(files) > 1                 # NIfTI files and DICOM series
    test = next(d for d in m["databases"] if d["path"] == "test_lmdb")
    assert test["count"] % 27 == 0                       # 3 sizes x 3 shifts x 3 rotations
    assert "PE level" in m["notes"]["reduction_unit"]


def test_pe_build_is_deterministic(dataset, tmp_path):
    cfg = PeConfig(train_patches=60, patch_size=32, sample_px=16, rotations=3)
    manifest_csv = dataset.parent / "c" / "candidates.csv"
    again = tajbakhsh_apps.build("pe", manifest_csv, tmp_path / "again", cfg, progress=False)
    a = [(k, im.tobytes(), lab) for k, im, lab in read_lmdb(dataset / "full/train_lmdb")]
    b = [(k, im.tobytes(), lab) for k, im, lab in read_lmdb(again / "full/train_lmdb")]
    assert a == b
