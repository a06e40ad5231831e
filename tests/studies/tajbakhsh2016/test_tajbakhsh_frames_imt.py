"""Tajbakhsh frame-quality crops and intima-media patches, training and dense test time."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtl.datasets.check import check_dataset
from medtl.datasets.formats.candidates import CandidateError, read_candidates, write_candidates
from medtl.datasets.formats.images import read_rgb, rgb_to_bgr_chw
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.studies.tajbakhsh2016 import applications as tajbakhsh_apps
from medtl.studies.tajbakhsh2016.apps.frames import SCHEMA as FRAMES
from medtl.studies.tajbakhsh2016.apps.frames import FramesApp, FramesConfig
from medtl.studies.tajbakhsh2016.apps.imt import SCHEMA as IMT
from medtl.studies.tajbakhsh2016.apps.imt import (
    ImtApp,
    ImtConfig,
    Interfaces,
    class_positions,
    confidence_maps,
    dense_batches,
    read_interfaces,
    read_test_rois,
    windows,
)
from medtl.studies.tajbakhsh2016.phantoms import write_frame_collection, write_imt_collection

# ------------------------------------------------------------------ frames


def test_paper_frames_give_200_random_227_crops(tmp_path):
    write_frame_collection(tmp_path / "c", videos=2, frames_per_video=2)   # 500 x 350
    cands = read_candidates(tmp_path / "c" / "candidates.csv", FRAMES)
    app = FramesApp(FramesConfig())
    origins = app.crop_origins(cands[0], "train")
    assert origins.shape == (200, 2)
    assert origins[:, 0].max() <= 500 - 227 and origins[:, 1].max() <= 350 - 227
    assert origins.min() >= 0 and len({tuple(o) for o in origins}) > 190
    assert (origins == app.crop_origins(cands[0], "train")).all()
    assert not (origins == app.crop_origins(cands[1], "train")).all()
    assert not (origins == app.crop_origins(cands[0], "test")).all()
    frame = app.load(cands[0].image, [])
    crops = app.render(frame, cands[0], "train", cands[0].label, np.array([3, 7]))
    assert crops.shape == (2, 3, 227, 227)
    x, y = origins[3]
    bgr = rgb_to_bgr_chw(read_rgb(cands[0].image))
    assert (crops[0] == bgr[:, y:y + 227, x:x + 227]).all()


def test_frames_dataset_reduces_by_frame_and_balances(tmp_path):
    write_frame_collection(tmp_path / "c", videos=4, frames_per_video=10, size=(80, 60))
    cfg = FramesConfig(train_patches=120, patch_size=40, frame_size=(80, 60),
                       crops_per_frame=6, reductions=[0.5, 0.1])
    ds = tajbakhsh_apps.build("frames", tmp_path / "c" / "candidates.csv", tmp_path / "ds",
                              cfg, progress=False)
    report = check_dataset(ds)
    assert report.ok, [d.problems for d in report.databases]
    m = json.loads((ds / "manifest.json").read_text())
    dbs = {d["path"]: d for d in m["databases"]}
    for name in ("full/train_lmdb", "full/val_lmdb", "reduced_10pct/train_lmdb"):
        assert dbs[name]["label_counts"]["0"] == dbs[name]["label_counts"]["1"]
    assert dbs["test_lmdb"]["count"] == 20 * 6
    assert m["protocol"]["split_unit"]["assumed"]
    # the frames of a reduction are a subset of the larger one's
    kept: dict[str, set[str]] = {}
    with open(ds / "reductions.csv", newline="") as f:
        for row in csv.DictReader(f):
            kept.setdefault(row["reduction"], set()).add(row["candidate_id"])
    assert kept["reduced_10pct"] <= kept["reduced_50pct"]


# ------------------------------------------------------------------ intima-media


def test_interface_and_background_pixels():
    li = np.array([5.2, 5.6, np.nan, 5.0])
    ma = np.array([12.0, 12.4, 12.0, np.nan])
    pos = class_positions(Interfaces(li, ma), height=20, halfwidth=1, far=4.0)
    assert len(pos[1]) == 9 and len(pos[2]) == 9
    assert {tuple(p) for p in pos[1]} == {(4, 0), (5, 0), (6, 0), (5, 1), (6, 1), (7, 1),
                                          (4, 3), (5, 3), (6, 3)}
    assert {tuple(p) for p in pos[2]} == {(11, 0), (12, 0), (13, 0), (11, 1), (12, 1),
                                          (13, 1), (11, 2), (12, 2), (13, 2)}
    bg = {tuple(p) for p in pos[0]}
    assert {c for _, c in bg} == {0, 1}                # only columns with both interfaces
    for r, c in bg:
        assert abs(r - li[c]) > 4 and abs(r - ma[c]) > 4


def test_windows_are_centred_on_their_pixel():
    gray = np.zeros((30, 40), np.uint8)
    gray[12, 17] = 255
    w = windows(gray, np.array([[12, 17]]), patch_px=9, size=9)
    assert w.shape == (1, 3, 9, 9) and w[0, 0, 4, 4] == 255 and w[0, 0].sum() == 255
    w = windows(gray, np.array([[0, 0]]), patch_px=9, size=9)       # zeros outside the image
    assert w.sum() == 0
    big = windows(gray, np.array([[12, 17]]), patch_px=9, size=27)
    ys, xs = np.nonzero(big[0, 0] == big[0, 0].max())
    assert abs(ys.mean() - 13) <= 1 and abs(xs.mean() - 13) <= 1


@pytest.fixture(scope="module")
def imt(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("imt")
    write_imt_collection(root / "c", subjects=5, rois_per_subject=2, seed=4)
    cfg = ImtConfig(train_patches=150, patch_size=24, patch_px=12)
    ds = tajbakhsh_apps.build("imt", root / "c" / "candidates.csv", root / "ds", cfg,
                              progress=False)
    return root / "c", ds


def test_imt_dataset_has_three_balanced_classes_and_no_test_lmdb(imt):
    _, ds = imt
    report = check_dataset(ds)
    assert report.ok, [d.problems for d in report.databases]
    m = json.loads((ds / "manifest.json").read_text())
    dbs = {d["path"]: d for d in m["databases"]}
    assert set(dbs) == {"full/train_lmdb", "full/val_lmdb", "single_group/train_lmdb"}
    counts = dbs["full/train_lmdb"]["label_counts"]
    assert counts["0"] == counts["1"] == counts["2"] == 40
    assert len(dbs["single_group/train_lmdb"]["patient_counts"]) == 1
    assert m["protocol"]["single_group"]["source"].startswith("Tajbakhsh 2016 Sec. VI-D")


def test_interface_patches_show_the_interface_at_their_centre(imt):
    _, ds = imt
    by_class: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}
    for _, image, label in read_lmdb(ds / "full/train_lmdb"):
        assert (image[0] == image[1]).all() and (image[1] == image[2]).all()
        by_class[label].append(image[0].astype(float))
    li = np.mean(by_class[1], axis=0)
    ma = np.mean(by_class[2], axis=0)
    # lumen-intima: dark lumen above the centre, brighter below; media-adventitia: the
    # bright adventitia below the centre
    assert li[:8].mean() + 30 < li[16:].mean()
    assert ma[16:].mean() > ma[:8].mean() + 30
    assert ma[16:].mean() > li[16:].mean()


def test_dense_application_covers_the_roi_with_training_patches(imt):
    coll, ds = imt
    rois = read_test_rois(ds)
    assert len(rois) == 6                       # the test subjects' ROIs
    roi = rois[0]
    assert roi.shape == (36, 48) and roi.patch_px == 12 and roi.patch_size == 24
    seen = np.zeros(roi.shape, int)
    batches = list(dense_batches(roi, batch=500))
    for rows, cols, patches in batches:
        seen[rows, cols] += 1
        assert patches.shape == (len(rows), 3, 24, 24) and patches.dtype == np.uint8
    assert (seen == 1).all()
    # a dense patch is the training patch of the same pixel
    cands = read_candidates(coll / "candidates.csv", IMT)
    app = ImtApp(ImtConfig(patch_size=24, patch_px=12))
    app.check(cands)
    cand = next(c for c in cands if c.candidate_id == roi.candidate_id)
    gray = app.load(cand.image, [])
    pos = app._positions[cand.candidate_id][1][:3]
    train = app.render(gray, cand, "train", 1, np.arange(3))
    rows = np.concatenate([b[0] for b in batches])
    cols = np.concatenate([b[1] for b in batches])
    patches = np.concatenate([b[2] for b in batches])
    for p, (r, c) in zip(train, pos, strict=True):
        (k,) = np.nonzero((rows == r) & (cols == c))[0]
        assert (patches[k] == p).all()
    probs = [(r, c, np.stack([np.zeros(len(r)), r / 100.0, c / 100.0], 1))
             for r, c, _ in batches]
    li, ma = confidence_maps(roi.shape, probs)
    assert li[7, 3] == pytest.approx(0.07) and ma[7, 3] == pytest.approx(0.03)
    inter = read_interfaces(ds / "test_interfaces" / "roi_00000.csv", 48)
    np.testing.assert_allclose(inter.lumen_intima, roi.interfaces.lumen_intima)


def test_bad_annotation_files_are_named(tmp_path):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "f.png")
    (tmp_path / "a.csv").write_text("x,lumen_intima,media_adventitia\n0,5,9\n40,5,9\n")
    write_candidates(tmp_path / "c.csv", [{"image": "f.png", "group": f"s{i}",
                                           "candidate_id": f"r{i}", "annotation": "a.csv"}
                                          for i in range(3)])
    with pytest.raises(CandidateError, match=r"a\.csv:3: column 40 outside the ROI"):
        tajbakhsh_apps.build("imt", tmp_path / "c.csv", tmp_path / "ds", ImtConfig(),
                             progress=False)
    (tmp_path / "a.csv").write_text("x,li,ma\n0,5,9\n")
    with pytest.raises(CandidateError, match=r"a\.csv:1: header must be"):
        tajbakhsh_apps.build("imt", tmp_path / "c.csv", tmp_path / "ds", ImtConfig(),
                             progress=False)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("application", ["frames", "imt"])
def test_frame_and_imt_sampling_is_deterministic_under_its_seed(application, tmp_path):
    if application == "frames":
        write_frame_collection(tmp_path / "c", videos=4, frames_per_video=4, size=(60, 40))
        make = lambda seed: FramesConfig(train_patches=40, patch_size=24,  # noqa: E731
                                         frame_size=(60, 40), crops_per_frame=4,
                                         reductions=[0.5], seed=seed)
    else:
        write_imt_collection(tmp_path / "c", subjects=4, rois_per_subject=1)
        make = lambda seed: ImtConfig(train_patches=60, patch_size=16,  # noqa: E731
                                      patch_px=8, seed=seed)
    manifest = tmp_path / "c" / "candidates.csv"
    runs = [tajbakhsh_apps.build(application, manifest, tmp_path / f"ds{i}", make(seed),
                                 progress=False) for i, seed in enumerate((1, 1, 2))]
    records = [[(k, im.tobytes(), lab) for k, im, lab in read_lmdb(d / "full/train_lmdb")]
               for d in runs]
    assert records[0] == records[1]
    assert records[0] != records[2]
