"""ILD: database-format phantoms -> ROI reader -> slice / patch datasets -> Caffe."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from medtl import config
from medtl.datasets.channels import to_caffe
from medtl.datasets.check import check_dataset, read_through_caffe
from medtl.datasets.folds import read_folds
from medtl.datasets.manifest import read_manifest
from medtl.studies.shin2016.ild import dataset as ild_dataset
from medtl.studies.shin2016.ild import reader as ild_io
from medtl.studies.shin2016.ild.phantoms import write_collection

FAST = {"augmentations_per_slice": 2, "slice_size": 32, "patch_size": 16,
        "patches_per_roi": 6, "patch_output_size": 32}

ROI_TEXT = """Study: 1.2.3
Series: 1.2.3.4
SpacingX: 0.5
SpacingY: 0.5
SpacingZ: 10
label: fibrosis
slice_number: 2
nb_points_on_contour: 3
1.0 1.0
10.0 1.0
10.0 10.0
slice_number: 3
nb_points_on_contour: 4
0 0
5 0
5 5
0 5
label: reticulation
slice_number: 2
nb_points_on_contour: 3
1 1
2 1
2 2
"""


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ild") / "ILD_DB"
    write_collection(root, patients=6, slices_per_patient=3, size=128, seed=2)
    return root


def _cfg(**kw) -> ild_dataset.IldConfig:
    return config.from_mapping(ild_dataset.IldConfig, FAST | kw)


def _index(dest: Path, db: dict) -> list[dict]:
    with open(dest / db["index_file"], newline="") as f:
        return list(csv.DictReader(f))


def test_roi_file_is_parsed_as_distributed(tmp_path):
    f = tmp_path / "rois.txt"
    f.write_text(ROI_TEXT)
    rois, unknown = ild_io.parse_roi_file(f, "P1")
    assert unknown == 0
    assert [(r.label, r.slice_number, len(r.points_mm)) for r in rois] == [
        ("fibrosis", 2, 3), ("fibrosis", 3, 4), ("reticulation", 2, 3)]
    np.testing.assert_allclose(rois[0].pixels(), [[2, 2], [20, 2], [20, 20]])
    assert rois[1].where == f"{f}:13" and rois[1].id == "P1:rois.txt:13"


@pytest.mark.parametrize("bad,line,message", [
    ("10.0 1.0", "10.0 one", r":10: expected 'x y' in mm"),
    ("nb_points_on_contour: 4\n0 0", "nb_points_on_contour: 40\n0 0",
     r":13: 40 points announced"),
    ("slice_number: 3", "slice_number: 0", r":12: slice_number is 1-based"),
    ("label: fibrosis\n", "", r":7: contour before its label"),
])
def test_roi_file_errors_name_file_and_line(tmp_path, bad, line, message):
    f = tmp_path / "rois.txt"
    f.write_text(ROI_TEXT.replace(bad, line, 1))
    with pytest.raises(ild_io.IldDataError, match=rf"{f}{message}"):
        ild_io.parse_roi_file(f, "P1")


def test_patches_lie_inside_the_roi():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 10:30] = True
    corners = ild_dataset.patch_centres(mask, 8, 1.0)
    assert len(corners) == 13 * 13
    assert all(mask[y:y + 8, x:x + 8].all() for y, x in corners)
    assert len(ild_dataset.patch_centres(mask, 8, 0.5)) > len(corners)


def test_slice_level_cv5_is_balanced_patient_disjoint_and_read_by_caffe(database, tmp_path):
    dest = ild_dataset.build(database, tmp_path / "slices", _cfg(), progress=False)
    report = check_dataset(dest)
    assert report.ok, [d.problems for d in report.databases] + report.problems
    manifest = read_manifest(dest)
    folds = read_folds(dest / "folds.csv")
    folds.check_disjoint()
    assert folds.k == 5 and manifest["protocol"]["augmentations_per_slice"]["set_by_user"]
    multi = 0
    for db in manifest["databases"]:
        if db["role"] == "train":
            counts = list(db["label_counts"].values())
            assert len(counts) == 6 and max(counts) - min(counts) <= 1  # equal prior
            assert not set(db["patient_counts"]) & folds.patients(db["fold"])
        else:
            rows = _index(dest, db)
            assert {r["patient_id"] for r in rows} <= folds.patients(db["fold"])
            multi += sum("|" in r["labels"] for r in rows)
    assert multi > 0  # multi-label slices appear once per label


def test_patch_level_records_are_the_roi_patches(database, tmp_path):
    dest = ild_dataset.build(database, tmp_path / "patches",
                             _cfg(level="patch", prior="biased", only_folds=[1]),
                             progress=False)
    manifest = read_manifest(dest)
    test = next(d for d in manifest["databases"] if d["role"] == "test")
    data, labels = read_through_caffe(test, dest, batch=50)
    rows = _index(dest, test)
    patients = {p.pid: p for p in ild_io.scan(database)}
    rois = {r.id: r for p in patients.values() for r in p.rois}
    for row in rows[::7]:
        roi = rois[row["roi"]]
        hu, _ = ild_io.read_slice(patients[row["patient_id"]].slice_files[int(row["slice"]) - 1])
        y, x = int(row["row"]), int(row["col"])
        mask = ild_dataset._roi_mask(roi, hu.shape)
        assert mask[y:y + 16, x:x + 16].mean() >= 0.75
        # the windows' picture (lung R) in Caffe's order: lung in channel 2
        expected = ild_dataset.resize(to_caffe(ild_dataset.to_rgb(hu[y:y + 16, x:x + 16],
                                                                  _cfg().windows)), 32)
        rank = int(row["rank"])
        np.testing.assert_array_equal(data[rank], expected.astype(np.float32))
        assert int(labels[rank]) == int(row["label"])
    assert len(manifest["counts"]["items_per_class"]) == 6
    assert all(v > 0 for v in manifest["counts"]["items_per_class"].values())


def test_slice_random_and_leave_one_out_splits(database, tmp_path):
    rnd = ild_dataset.build(database, tmp_path / "random", _cfg(split="slice_random"),
                            progress=False)
    folds = read_folds(rnd / "folds.csv")
    assert not folds.patient_disjoint and folds.k == 5
    assert len(folds.fold_of) == 6 * 3  # every annotated slice in exactly one fold
    assert check_dataset(rnd).ok
    loo = ild_dataset.build(database, tmp_path / "loo",
                            _cfg(split="loo", only_folds=[1, 4], multi_label="multi_hot",
                                 backend="hdf5"), progress=False)
    manifest = read_manifest(loo)
    assert read_folds(loo / "folds.csv").k == 6
    test = next(d for d in manifest["databases"] if d["role"] == "test" and d["fold"] == 4)
    assert list(test["patient_counts"]) == ["004"] and test["label_shape"] == [6]
    _, labels = read_through_caffe(test, loo)
    for row, vector in zip(_index(loo, test), labels, strict=True):
        names = {ild_io.SIX_CLASSES[k] for k in np.nonzero(vector)[0]}
        assert names == set(row["labels"].split("|"))
    assert check_dataset(loo).ok


def test_bad_ild_inputs(database, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(database, root)
    roi_file = next((root / "002").glob("*.txt"))
    text = roi_file.read_text()
    # an ROI polygon with 2 points: skipped and counted, or an error naming file and line
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("nb_points_on_contour"))
    n = int(lines[at].split()[1])
    lines[at] = "nb_points_on_contour: 2"
    del lines[at + 3:at + 1 + n]
    roi_file.write_text("\n".join(lines) + "\n")
    dest = ild_dataset.build(root, tmp_path / "ok", _cfg(level="patch", only_folds=[1]),
                             progress=False)
    assert read_manifest(dest)["skipped"]["ROI polygon with fewer than 3 points"] == 1
    with pytest.raises(ild_io.IldDataError, match=rf"{roi_file}:{at + 1}: ROI polygon with 2"):
        ild_dataset.build(root, tmp_path / "no", _cfg(level="patch", degenerate_rois="error"),
                          progress=False)
    assert not (tmp_path / "no").exists()
    roi_file.write_text(text.replace("slice_number: 1\n", "slice_number: 9\n", 1))
    with pytest.raises(ild_io.IldDataError, match=r"slice_number 9, but .* has 3 slices"):
        ild_dataset.build(root, tmp_path / "no", _cfg(), progress=False)
    roi_file.write_text(text)
    # an ROI file for a patient without slices
    (root / "099").mkdir()
    shutil.copy(roi_file, root / "099" / "rois.txt")
    with pytest.raises(ild_io.IldDataError, match=r"099/rois.txt: ROI file for patient 099"):
        ild_dataset.build(root, tmp_path / "no", _cfg(), progress=False)
    shutil.rmtree(root / "099")
    # an empty class
    for f in root.glob("*/*.txt"):
        f.write_text(f.read_text().replace("label: emphysema", "label: bronchiectasis"))
    with pytest.raises(ild_io.IldDataError, match=r"empty class: .* fold 1 has no emphysema"):
        ild_dataset.build(root, tmp_path / "no", _cfg(), progress=False)
    assert not (tmp_path / "no").exists()
