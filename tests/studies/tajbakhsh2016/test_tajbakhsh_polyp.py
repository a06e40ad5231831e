"""Tajbakhsh polyp datasets: sampling, centring, determinism, bad input, Caffe read-back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtl.datasets.check import check_dataset
from medtl.datasets.formats.candidates import CandidateError, write_candidates
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.datasets.splits import read_splits
from medtl.errors import OutputExistsError
from medtl.studies.tajbakhsh2016 import applications as tajbakhsh_apps
from medtl.studies.tajbakhsh2016.apps.polyp import PolypApp, PolypConfig
from medtl.studies.tajbakhsh2016.phantoms import write_polyp_collection

SMALL = dict(train_patches=120, patch_size=32)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("polyp") / "collection"
    write_polyp_collection(root, videos=8, frames_per_video=3, size=(96, 72), seed=3)
    return root


@pytest.fixture(scope="module")
def dataset(collection, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("polyp_ds") / "ds"
    return tajbakhsh_apps.build("polyp", collection / "candidates.csv", dest,
                                PolypConfig(**SMALL, seed=1), progress=False)


def _records(path: Path) -> list[tuple[bytes, bytes, int]]:
    return [(k, im.tobytes(), lab) for k, im, lab in read_lmdb(path)]


def test_variants_are_three_scales_nine_shifts_eight_flips():
    app = PolypApp(PolypConfig())
    assert app.n == 216
    seen = {app.variant(v) for v in range(app.n)}
    assert len(seen) == 216
    assert {s for s, _, _ in seen} == {1.0, 1.2, 1.5}
    assert app.variant(0) == (1.0, (0, 0), 0)
    assert PolypApp(PolypConfig(translation_pattern="cross5")).n == 120


def test_dataset_reads_back_through_caffe_and_is_stratified(dataset):
    report = check_dataset(dataset)
    assert report.ok, [d.problems for d in report.databases] + report.problems
    m = json.loads((dataset / "manifest.json").read_text())
    dbs = {d["path"]: d for d in m["databases"]}
    assert set(dbs) == {"full/train_lmdb", "full/val_lmdb", "reduced_50pct/train_lmdb",
                        "reduced_25pct/train_lmdb", "test_lmdb"}
    for name in ("full/train_lmdb", "full/val_lmdb"):
        counts = dbs[name]["label_counts"]
        assert counts["0"] == counts["1"] > 0
    assert dbs["full/train_lmdb"]["count"] + dbs["full/val_lmdb"]["count"] <= 120
    assert m["protocol"]["train_patches"]["set_by_user"]
    assert m["protocol"]["scales"]["source"].startswith("Tajbakhsh 2016 Sec. VI-A")
    assert "assumed" in m["protocol"]["translation_pattern"]


def test_splits_and_reductions_never_split_a_video(dataset):
    role, group = read_splits(dataset / "splits.csv")
    sides: dict[str, set[str]] = {}
    for cid, r in role.items():
        sides.setdefault(group[cid], set()).add(r)
    assert all(len(s) == 1 for s in sides.values())       # a video is in one role only
    kept: dict[str, set[str]] = {}
    with open(dataset / "reductions.csv", newline="") as f:
        for row in csv.DictReader(f):
            kept.setdefault(row["reduction"], set()).add(row["candidate_id"])
    train_ids = {c for c, r in role.items() if r == "train"}
    for ids in kept.values():
        assert ids <= train_ids
        videos = {group[c] for c in ids}
        assert ids == {c for c in train_ids if group[c] in videos}
    assert kept["reduced_25pct"] <= kept["reduced_50pct"]


def test_test_set_holds_every_variant_of_every_test_candidate(dataset):
    role, _ = read_splits(dataset / "splits.csv")
    n_test = sum(1 for r in role.values() if r == "test")
    with open(dataset / "test_index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 216 * n_test
    first = rows[:216]
    assert len({r["candidate_id"] for r in first}) == 1
    assert [int(r["variant"]) for r in first] == list(range(216))
    assert {r["scale"] for r in first} == {"1", "1.2", "1.5"}
    assert {r["flip"] for r in first[:8]} == {"identity", "rot90", "rot180", "rot270",
                                              "flip_lr", "transpose", "flip_ud",
                                              "anti_transpose"}


def test_build_is_deterministic_under_its_seed(collection, dataset, tmp_path):
    again = tajbakhsh_apps.build("polyp", collection / "candidates.csv", tmp_path / "again",
                                 PolypConfig(**SMALL, seed=1), progress=False)
    other = tajbakhsh_apps.build("polyp", collection / "candidates.csv", tmp_path / "other",
                                 PolypConfig(**SMALL, seed=2), progress=False)
    for name in ("full/train_lmdb", "full/val_lmdb", "reduced_50pct/train_lmdb"):
        assert _records(dataset / name) == _records(again / name)
    assert _records(dataset / "full/train_lmdb") != _records(other / "full/train_lmdb")
    assert (dataset / "splits.csv").read_text() == (again / "splits.csv").read_text()
    with pytest.raises(OutputExistsError):
        tajbakhsh_apps.build("polyp", collection / "candidates.csv", again,
                             PolypConfig(**SMALL), progress=False)


def test_patches_of_a_known_object_are_centred_on_its_box(tmp_path):
    frame = np.zeros((160, 200, 3), np.uint8)
    yy, xx = np.mgrid[0:160, 0:200] + 0.5
    frame[(xx - 130) ** 2 + (yy - 62) ** 2 <= 144] = (255, 40, 20)  # disc, radius 12
    Image.fromarray(frame).save(tmp_path / "f.png")
    cands = []
    for g in range(4):   # one object per video; a plain background candidate beside it
        cands.append({"image": "f.png", "group": f"v{g}", "candidate_id": f"p{g}",
                      "label": "polyp", "split": "test" if g == 3 else "train",
                      "x0": 110, "y0": 42, "x1": 150, "y1": 82})
        cands.append({"image": "f.png", "group": f"v{g}", "candidate_id": f"n{g}",
                      "label": "non-polyp", "split": "test" if g == 3 else "train",
                      "x0": 5, "y0": 100, "x1": 45, "y1": 140})
    write_candidates(tmp_path / "c.csv", cands)
    cfg = PolypConfig(train_patches=8, patch_size=48, reductions=[])
    ds = tajbakhsh_apps.build("polyp", tmp_path / "c.csv", tmp_path / "ds", cfg,
                              progress=False)
    with open(ds / "test_index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    for (_, image, label), row in zip(read_lmdb(ds / "test_lmdb"), index, strict=True):
        if row["candidate_id"] != "p3":
            assert label == 0 and image[2].max() == 0   # no red on the background candidate
            continue
        red = image[2].astype(float)                   # BGR: channel 2 is red
        ys, xs = np.nonzero(red > 127)
        scale, dx, dy = float(row["scale"]), float(row["dx"]), float(row["dy"])
        # the disc sits at the centre, moved against the patch's shift (then flipped); the
        # crop snaps to whole pixels, 0.5 source pixel = 0.6 / scale patch pixels
        off = np.array([-dx, -dy]) * 48
        cx, cy = xs.mean() - 23.5, ys.mean() - 23.5
        assert np.hypot(cx, cy) == pytest.approx(np.hypot(*off), abs=0.9)
        assert len(xs) == pytest.approx(np.pi * (12 * 48 / (40 * scale)) ** 2, rel=0.1)


def test_bad_manifests_leave_nothing_behind(collection, tmp_path):
    rows = list(csv.DictReader((collection / "candidates.csv").read_text().splitlines()))
    for r in rows:
        r["image"] = str(collection / r["image"])
        r["mask"] = str(collection / r["mask"])
    rows[2]["image"] = str(collection / "frames" / "none.png")
    bad = write_candidates(tmp_path / "bad.csv", rows)
    with pytest.raises(CandidateError, match=r"bad\.csv:4: image .*none\.png does not exist"):
        tajbakhsh_apps.build("polyp", bad, tmp_path / "out", PolypConfig(**SMALL),
                             progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_unreadable_frame_fails_without_a_partial_dataset(collection, tmp_path):
    rows = list(csv.DictReader((collection / "candidates.csv").read_text().splitlines()))
    broken = tmp_path / "broken.png"
    Image.open(collection / rows[0]["image"]).save(broken)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])        # header intact, pixels cut short
    for r in rows:
        r["image"] = str(collection / r["image"])
        r["mask"] = str(collection / r["mask"])
    rows[0]["image"] = str(broken)
    write_candidates(tmp_path / "c.csv", rows)
    with pytest.raises(Exception, match=r"broken\.png"):
        tajbakhsh_apps.build("polyp", tmp_path / "c.csv", tmp_path / "out",
                             PolypConfig(**SMALL), progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_test_patches_render_again_as_stored(dataset):
    stored = [(im, lab) for _, im, lab in read_lmdb(dataset / "test_lmdb")]
    again = []
    for cand, variants, patches in tajbakhsh_apps.iter_test_patches(dataset, batch=50):
        assert len(variants) == len(patches) <= 50
        again.extend((p, cand.label) for p in patches)
    assert len(again) == len(stored)
    assert all((a == b).all() and la == lb
               for (a, la), (b, lb) in zip(again, stored, strict=True))
