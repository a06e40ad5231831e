"""Ravishankar kidney patches, Haar-like features and fc7 extraction through pycaffe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from medtl.cli import main
from medtl.datasets.check import check_dataset
from medtl.datasets.features import FeatureError, extract
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.datasets.mean import read_binaryproto
from medtl.studies.ravishankar2016.dataset import (
    KidneyConfig,
    build,
    dice,
    render_boxes,
    sliding_boxes,
)
from medtl.studies.ravishankar2016.haar import HaarBank, _enumerate, lmdb_features
from medtl.studies.ravishankar2016.phantoms import write_kidney_collection
from medtl.surgery import random_weights

CFG = dict(patch_size=48, haar_features=300, positives_per_kidney=4, negatives_per_image=6)

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 40 dim: 40 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 5 stride: 3
                            weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc7" type: "InnerProduct" bottom: "conv1" top: "fc7"
        inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.1 }
                              bias_filler { type: "constant" value: -0.05 } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8"
        inner_product_param { num_output: 2 } }
"""


@pytest.fixture(scope="module")
def kidney(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kidney")
    write_kidney_collection(root / "c", subjects=6, images_per_subject=2, size=(96, 72))
    ds = build(root / "c" / "candidates.csv", root / "ds", KidneyConfig(**CFG), progress=False)
    return root, ds


def test_dice_of_boxes():
    assert dice((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert dice((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(0.5)
    assert dice((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_kidney_dataset_reads_back_and_labels_follow_the_overlap(kidney):
    _, ds = kidney
    report = check_dataset(ds)
    assert report.ok, [d.problems for d in report.databases] + report.problems
    cfg = KidneyConfig(**CFG)
    for role in ("train", "val", "test"):
        with open(ds / f"{role}_index.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["label"] for r in rows} == {"0", "1"}
        for r in rows:
            d = float(r["dice"])
            assert d >= cfg.positive_min_dice if r["label"] == "1" else \
                d <= cfg.negative_max_dice
    splits = list(csv.DictReader((ds / "splits.csv").read_text().splitlines()))
    side: dict[str, set[str]] = {}
    for r in splits:
        side.setdefault(r["group"], set()).add("test" if r["role"] == "test" else "training")
    assert all(len(s) == 1 for s in side.values())
    tests = list(csv.DictReader((ds / "test_images.csv").read_text().splitlines()))
    assert tests and all(Path(r["image"]).is_file() for r in tests)
    m = json.loads((ds / "manifest.json").read_text())
    assert m["protocol"]["haar_features"]["set_by_user"]
    assert m["notes"]["haar"]["n_features"] == 300


def test_haar_files_follow_the_lmdb_order(kidney):
    _, ds = kidney
    bank = HaarBank(24, 300)
    records = list(read_lmdb(ds / "val_lmdb"))
    with h5py.File(ds / "haar" / "val.h5", "r") as f:
        feats, labels = f["features"][...], f["label"][...]
    assert feats.shape == (len(records), 300)
    assert [int(v) for v in labels] == [lab for _, _, lab in records]
    images = np.stack([im for _, im, _ in records])
    np.testing.assert_allclose(feats, bank.compute(images), rtol=1e-5, atol=1e-5)
    out = lmdb_features(ds / "val_lmdb", ds.parent / "haar_val.h5", bank, batch=5,
                        progress=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["features"][...], feats, rtol=1e-5, atol=1e-5)
        assert f["key"][0] == records[0][0]


def test_haar_bank_is_viola_jones_and_measures_edges():
    every, _ = _enumerate(24, 1)
    assert len(every) == 162_336          # Viola & Jones's count for a 24 x 24 window
    bank = HaarBank(24, 2000)
    assert len(bank) == 2000 and bank.describe()["per_kind"]["checker"] > 0
    assert (bank.rects == HaarBank(24, 2000).rects).all()
    step = np.zeros((1, 48, 48), np.uint8)
    step[:, :, 24:] = 200                  # dark left half, bright right half
    f = bank.compute(step[None])[0]
    lr = [i for i, k in enumerate(bank.kinds) if k == "edge_lr"]
    tb = [i for i, k in enumerate(bank.kinds) if k == "edge_tb"]
    assert f[lr].min() < -1.5              # left (+) minus right (-): strongly negative
    assert np.abs(f[tb]).max() < 1e-4      # no vertical change
    flipped = bank.compute(step[None, :, :, ::-1])[0]
    assert flipped[lr].max() > 1.5


def test_fc7_features_match_a_direct_forward(kidney, caffe, tmp_path):
    _, ds = kidney
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(TINY)
    weights = random_weights(deploy, tmp_path / "w.caffemodel", seed=3)
    out = extract(deploy, weights, ds / "test_lmdb", tmp_path / "fc7.h5",
                  mean_file=ds / "train_mean.binaryproto", batch=7, progress=False)
    with h5py.File(out, "r") as f:
        feats, labels, keys = f["features"][...], f["label"][...], f["key"][...]
        assert f.attrs["blob"] == "fc7"
    records = list(read_lmdb(ds / "test_lmdb"))
    assert feats.shape == (len(records), 8) and (feats >= 0).all()   # post-ReLU
    assert [int(v) for v in labels] == [lab for _, _, lab in records]
    assert keys[0] == records[0][0]
    mean = read_binaryproto(ds / "train_mean.binaryproto")
    net = caffe.Net(str(deploy), str(weights), caffe.TEST)
    x = (records[2][1].astype(np.float32) - mean)[:, 4:44, 4:44]
    net.blobs["data"].data[...] = x[None]
    net.forward()
    np.testing.assert_allclose(feats[2], net.blobs["fc7"].data[0], rtol=1e-4, atol=1e-5)
    npz = extract(deploy, weights, ds / "val_lmdb", tmp_path / "fc7.npz", batch=4,
                  mean_value=(100.0,), progress=False)
    assert np.load(npz)["features"].shape[1] == 8


def test_feature_extraction_rejects_what_caffe_would_abort_on(kidney, tmp_path):
    _, ds = kidney
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(TINY)
    weights = random_weights(deploy, tmp_path / "w.caffemodel", seed=3)
    other = tmp_path / "other.prototxt"
    other.write_text(TINY.replace("num_output: 8", "num_output: 9"))
    with pytest.raises(FeatureError, match="no blob 'pool5'"):
        extract(deploy, weights, ds / "test_lmdb", tmp_path / "a.h5", blob="pool5",
                progress=False)
    with pytest.raises(FeatureError, match=r"does not fit .* at layer 'fc7'"):
        extract(other, weights, ds / "test_lmdb", tmp_path / "b.h5", progress=False)
    small = tmp_path / "small.prototxt"
    small.write_text(TINY.replace("dim: 40 dim: 40", "dim: 60 dim: 60"))
    small_w = random_weights(small, tmp_path / "s.caffemodel", seed=1)
    with pytest.raises(FeatureError, match="cannot feed the net's input"):
        extract(small, small_w, ds / "test_lmdb", tmp_path / "c.h5", progress=False)
    assert not list(tmp_path.glob("*.h5"))


def test_sliding_boxes_render_like_the_dataset(kidney):
    _, ds = kidney
    boxes = sliding_boxes(96, 72, [(40, 30)], stride=0.5)
    assert len(boxes) == 4 * 4 and boxes[:, 2].max() <= 96 and boxes[:, 3].max() <= 72
    with open(ds / "test_index.csv", newline="") as f:
        row = next(csv.DictReader(f))
    box = np.array([[float(row[k]) for k in ("x0", "y0", "x1", "y1")]])
    patch = render_boxes(Path(row["image"]), box, 48)[0]
    _, first, _ = next(read_lmdb(ds / "test_lmdb"))
    assert (patch == first).all()


def test_kidney_sampling_is_deterministic_under_its_seed(kidney, tmp_path):
    root, ds = kidney
    again = build(root / "c" / "candidates.csv", tmp_path / "a", KidneyConfig(**CFG),
                  progress=False)
    other = build(root / "c" / "candidates.csv", tmp_path / "b", KidneyConfig(**CFG, seed=9),
                  progress=False)
    for role in ("train", "val", "test"):
        assert (ds / f"{role}_index.csv").read_text() == \
            (again / f"{role}_index.csv").read_text()
        a = [(k, im.tobytes()) for k, im, _ in read_lmdb(ds / f"{role}_lmdb")]
        assert a == [(k, im.tobytes()) for k, im, _ in read_lmdb(again / f"{role}_lmdb")]
    assert (ds / "train_index.csv").read_text() != (other / "train_index.csv").read_text()


def _one_line_error(capsys, argv: list[str]) -> str:
    """`medtl ARGV` fails with status 2 and one line on stderr, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_haar_command_errors_are_one_line(kidney, tmp_path, capsys):
    _, ds = kidney
    err = _one_line_error(capsys, ["data", "haar", "--source", str(tmp_path / "nowhere"),
                                   "--out", str(tmp_path / "h.h5"), "--no-progress"])
    assert str(tmp_path / "nowhere") in err and "does not exist" in err
    err = _one_line_error(capsys, ["data", "haar", "--source", str(ds / "val_lmdb"), "--out",
                                   str(tmp_path / "h.h5"), "--features", "0"])
    assert "--features 0" in err
    assert not (tmp_path / "h.h5").exists()


def test_features_command_with_garbage_weights_is_one_line(kidney, tmp_path, capsys):
    _, ds = kidney
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(TINY)
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(bytes(range(256)) * 64)
    err = _one_line_error(capsys, ["data", "features", "--deploy", str(deploy), "--weights",
                                   str(garbage), "--source", str(ds / "test_lmdb"), "--out",
                                   str(tmp_path / "f.h5"), "--no-progress"])
    assert str(garbage) in err
    assert not (tmp_path / "f.h5").exists()
