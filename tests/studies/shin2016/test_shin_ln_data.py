"""Lymph nodes: TCIA-format phantoms -> reader -> 2.5D views -> LMDBs -> Caffe."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medtl import config
from medtl.datasets.channels import to_caffe
from medtl.datasets.check import check_dataset, read_through_caffe
from medtl.datasets.folds import read_folds
from medtl.datasets.formats.dicom import read_series
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.datasets.manifest import read_manifest
from medtl.datasets.views import ViewSampler, draw_params
from medtl.studies.shin2016.ln import dataset as ln_dataset
from medtl.studies.shin2016.ln import tcia as tcia_ln
from medtl.studies.shin2016.ln.phantoms import write_collection

SHAPE = (44, 72, 72)
SMALL = {"train_views_per_candidate": 4, "test_views_per_candidate": 2}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tcia") / "CT_Lymph_Nodes"
    truth = write_collection(root, patients=3, regions=("med",), seed=5, shape=SHAPE,
                             n_false=30)
    return root, truth


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory) -> Path:
    root, _ = collection
    dest = tmp_path_factory.mktemp("out") / "ln_med"
    cfg = config.from_mapping(ln_dataset.LnConfig, SMALL | {"output_sizes": [64, 32]})
    return ln_dataset.build(root, dest, cfg, progress=False)


def _cfg(**kw) -> ln_dataset.LnConfig:
    return config.from_mapping(ln_dataset.LnConfig, SMALL | kw)


def _copy(collection, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(collection[0], root)
    return root


def test_reader_finds_series_points_candidates_and_derives_the_index_base(collection, tmp_path):
    root, truth = collection
    patients = tcia_ln.scan(root, "med")
    assert [p.pid for p in patients] == sorted(truth)
    for p in patients:
        t = truth[p.pid]
        np.testing.assert_allclose(p.nodes, t.nodes, atol=1e-3)
        assert sum(c.label for c in p.candidates) == len(t.positives)
        assert sum(1 - c.label for c in p.candidates) == 30
        assert [c.node for c in p.candidates if c.label] == [n for _, n in t.positives]
        assert p.index_base == 0 and p.index_error_vox <= 0.5 + 1e-6
    # the same indices written 1-based are recognised as such
    copy = _copy(collection, tmp_path)
    pid = patients[0].pid
    f = copy / tcia_ln.ANNOTATIONS / pid / f"{pid}_lymphnodes_indices.txt"
    rows = [[int(v) + 1 for v in line.split()] for line in f.read_text().splitlines()]
    f.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    assert tcia_ln.scan(copy, "med")[0].index_base == 1


def test_dataset_matches_its_manifest_through_caffe(built):
    report = check_dataset(built)
    assert report.ok, [d.problems for d in report.databases] + report.problems
    assert len(report.databases) == 3 * 3 * 2  # folds x (train, val, test) x sizes


def test_folds_never_share_a_patient_and_counts_match_the_data(built):
    manifest = read_manifest(built)
    folds = read_folds(built / "folds.csv")
    folds.check_disjoint()
    assert folds.k == 3 and len(folds.fold_of) == 3
    for db in manifest["databases"]:
        fold_patients = folds.patients(db["fold"])
        if db["role"] == "test":
            assert set(db["patient_counts"]) <= fold_patients
            expected = manifest["counts"]["folds"][str(db["fold"])]["test_candidates"]
            assert db["label_counts"] == {k: 2 * v for k, v in expected.items()}
        else:
            assert not set(db["patient_counts"]) & fold_patients
            # equal prior: negatives re-selected to the number of positive views
            assert db["label_counts"]["0"] == db["label_counts"]["1"]
            assert db["label_counts"] == manifest["counts"]["folds"][str(db["fold"])][
                f"{db['role']}_views"]
    for fold, counts in manifest["counts"]["folds"].items():
        # validation patients are held out of the fold's training patients, never shared
        assert set(counts["val_patients"]).isdisjoint(counts["train_patients"])
        assert set(counts["val_patients"]).isdisjoint(folds.patients(int(fold)))
    prov = manifest["protocol"]
    assert prov["fov_mm"]["source"].startswith("Shin 2016 Sec. II")
    assert "assumed" in prov["max_translation_mm"]
    assert prov["train_views_per_candidate"]["set_by_user"]
    assert any(s["kind"] == "dicom-series" for s in manifest["sources"])


def test_test_views_read_by_caffe_equal_views_rendered_again(collection, built):
    root, _ = collection
    cfg = read_manifest(built)["config"]
    db = next(d for d in read_manifest(built)["databases"]
              if d["path"] == "fold1/test_64_lmdb")
    data, labels = read_through_caffe(db, built, batch=16)
    with open(built / db["index_file"], newline="") as f:
        rows = list(csv.DictReader(f))
    pid = rows[0]["patient_id"]
    patient = next(p for p in tcia_ln.scan(root, "med") if p.pid == pid)
    volume = read_series(patient.series_files)
    sampler = ViewSampler(volume.hu, volume.geometry, size=64)
    lnc = config.from_mapping(ln_dataset.LnConfig, {k: v for k, v in cfg.items()
                                                    if v is not None})
    for row in rows[:12]:
        params = ln_dataset.view_params(lnc, row["candidate_id"], ln_dataset.TEST,
                                        lnc.test_views_per_candidate)
        v = int(row["view"])
        world = np.array([float(row[k]) for k in "xyz"])
        again = sampler.render(world[None], params.take(np.array([v])), (-100.0, 200.0))[0]
        rank = int(row["rank"])
        # stored in Caffe's order: the picture's R (axial) in channel 2
        np.testing.assert_array_equal(data[rank], to_caffe(again).astype(np.float32))
        assert labels[rank] == int(row["label"])


def test_a_phantom_node_is_at_the_centre_of_every_plane_of_its_views(collection):
    root, truth = collection
    pid = sorted(truth)[0]
    patient = next(p for p in tcia_ln.scan(root, "med") if p.pid == pid)
    volume = read_series(patient.series_files)
    sampler = ViewSampler(volume.hu, volume.geometry, size=64)
    rng = np.random.default_rng(0)
    for node in truth[pid].nodes:
        params = draw_params(rng, 6, (35.0, 40.0), 0.0, True)
        views = sampler.render(np.repeat(node[None], 6, 0), params, (-100.0, 200.0))
        for view in views:
            for plane in view:
                # 2.5 px is 1.5 mm here: less than the phantom's 2 mm voxels, which
                # decide how symmetric the drawn node is about its true centre
                cy, cx = _blob_centre(plane)
                assert abs(cy - 31.5) < 2.5 and abs(cx - 31.5) < 2.5


def _blob_centre(plane: np.ndarray) -> tuple[float, float]:
    """Centre of mass of the bright blob at the strongest smoothed peak near the middle."""
    smooth = ndimage.gaussian_filter(plane.astype(float), 1.5)[16:48, 16:48]
    threshold = 0.5 * (smooth.max() + np.median(smooth))
    labels, _ = ndimage.label(smooth > threshold)
    blob = labels == labels[np.unravel_index(np.argmax(smooth), smooth.shape)]
    cy, cx = ndimage.center_of_mass(np.where(blob, smooth - threshold, 0.0))
    return cy + 16, cx + 16


def test_same_seed_same_dataset_and_biased_prior_keeps_negatives(collection, tmp_path):
    root, _ = collection
    a = ln_dataset.build(root, tmp_path / "a", _cfg(only_folds=[2]), progress=False)
    b = ln_dataset.build(root, tmp_path / "b", _cfg(only_folds=[2]), progress=False)
    for name in ("fold2/train_64_lmdb", "fold2/test_64_lmdb"):
        ra, rb = list(read_lmdb(a / name)), list(read_lmdb(b / name))
        assert [k for k, _, _ in ra] == [k for k, _, _ in rb]
        assert all(np.array_equal(x[1], y[1]) for x, y in zip(ra, rb, strict=True))
    c = ln_dataset.build(root, tmp_path / "c", _cfg(only_folds=[2], prior="biased"),
                         progress=False)
    counts = read_manifest(c)["databases"][0]["label_counts"]
    assert counts["0"] > 3 * counts["1"]
    assert sorted(p.name for p in c.iterdir()) == ["candidates.csv", "fold2", "folds.csv",
                                                   "manifest.json", "nodes.csv"]


def test_user_candidate_csv_replaces_the_cade_files(collection, tmp_path):
    root, truth = collection
    rows = ["patient_id,x,y,z,label"]
    for pid, t in truth.items():
        rows += [f"{pid},{x},{y},{z},1" for x, y, z in t.nodes]
        rows += [f"{pid},{x},{y},{z},0" for (x, y, z), _ in t.negatives[:5]]
    (tmp_path / "cands.csv").write_text("\n".join(rows) + "\n")
    dest = ln_dataset.build(root, tmp_path / "csv", _cfg(candidates_csv=tmp_path / "cands.csv"),
                            progress=False)
    manifest = read_manifest(dest)
    assert manifest["counts"]["candidates"] == {
        "0": 15, "1": sum(len(t.nodes) for t in truth.values())}
    assert check_dataset(dest).ok


def _fails(root: Path, dest: Path, match: str, **kw) -> None:
    with pytest.raises(tcia_ln.LnDataError, match=match):
        ln_dataset.build(root, dest, _cfg(**kw), progress=False)
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")]


def test_bad_inputs_name_the_file_and_leave_no_dataset(collection, tmp_path):
    root = _copy(collection, tmp_path)
    pid = sorted(collection[1])[1]
    neg = root / tcia_ln.CANDIDATES / pid / f"{pid}_negCADe_physicalPoints.txt"
    lines = neg.read_text().splitlines()
    # a point outside the volume: an error naming file and line, or a counted skip
    neg.write_text("\n".join([*lines, "900.0 900.0 900.0"]) + "\n")
    _fails(root, tmp_path / "out1", rf"{neg}:{len(lines) + 1}: candidate outside the volume")
    skipped = ln_dataset.build(root, tmp_path / "out2", _cfg(points_outside="skip"),
                               progress=False)
    assert read_manifest(skipped)["skipped"] == {"candidate outside its volume": 1}
    # a malformed line
    neg.write_text("\n".join([*lines[:3], "1.0 two 3.0", *lines[3:]]) + "\n")
    _fails(root, tmp_path / "out3", rf"{neg}:4: not a number")
    neg.write_text("\n".join(lines) + "\n")
    # annotations for a patient without a series
    orphan = root / tcia_ln.ANNOTATIONS / "MED_LYMPH_099"
    shutil.copytree(root / tcia_ln.ANNOTATIONS / pid, orphan)
    _fails(root, tmp_path / "out4", r"MED_LYMPH_099.*which has no DICOM series")
    shutil.rmtree(orphan)
    # a missing candidate file
    neg.rename(neg.with_suffix(".bak"))
    _fails(root, tmp_path / "out5", rf"{neg}: missing \(negCADe")
    neg.with_suffix(".bak").rename(neg)
    # a corrupt DICOM slice, found while streaming the volumes
    series = sorted((root / pid).rglob("*.dcm"))
    data = series[5].read_bytes()
    series[5].write_bytes(data[:400])
    _fails(root, tmp_path / "out6", rf"{series[5]}")
    series[5].write_bytes(data)
    # an empty class: no positive candidates left for a training set
    for p in collection[1]:
        (root / tcia_ln.CANDIDATES / p / f"{p}_posCADe_physicalPoints.txt").write_text("")
        (root / tcia_ln.CANDIDATES / p / f"{p}_posCADe_grtIDs.txt").write_text("")
    _fails(root, tmp_path / "out7", "empty class: the training set of fold 1 has no positive")


def test_manifest_records_versions_seed_and_sources(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["generator"]["module"] == "medtl.studies.shin2016.ln.dataset"
    assert manifest["seed"] == 0 and manifest["config"]["output_sizes"] == [64, 32]
    assert manifest["notes"]["lymphnodes_indices_base"] == {"0": 3}
    texts = [s for s in manifest["sources"] if s["kind"] == "file"]
    assert all(len(s["sha256"]) == 64 for s in texts) and len(texts) >= 3 * 5
