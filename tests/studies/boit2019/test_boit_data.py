"""ChestX-ray14: the published files read and cross-checked, patient-level splits, 8-bit LMDB
(binary) and HDF5 (14-label) sets read back through Caffe, Keras-style augmentation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medtl.config import ConfigError, from_mapping
from medtl.datasets.check import check_dataset, read_through_caffe
from medtl.datasets.hdf5_writer import read_hdf5_list
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.nets.densenet import INPUT_SCALE, MEAN_BGR
from medtl.studies.boit2019.augment import KerasAugment, transform_matrix
from medtl.studies.boit2019.dataset import ChestXray14Config, build, label_of, load_resized
from medtl.studies.boit2019.phantoms import write_chestxray14_collection
from medtl.studies.boit2019.reader import (
    FINDINGS,
    ChestXray14Error,
    parse_findings,
    read_bbox_list,
    read_data_entry,
    scan,
)

SMALL = dict(image_size=32, crop_size=28)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cxr") / "ChestX-ray14"
    write_chestxray14_collection(root, patients=24, size=64, per_folder=15, seed=5)
    return root


def _split_patients(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in csv.DictReader(path.read_text().splitlines()):
        out.setdefault(row["group"], set()).add("test" if row["role"] == "test" else
                                                "train_val")
    return out


def test_reader_parses_the_published_files(collection):
    entries = read_data_entry(collection / "Data_Entry_2017.csv")
    first = next(iter(entries.values()))
    assert first.image.endswith("_000.png") and first.patient == "1"
    assert all(set(e.findings) <= set(FINDINGS) for e in entries.values())
    assert any(not e.findings for e in entries.values())
    boxes = read_bbox_list(collection / "BBox_List_2017.csv")
    assert boxes and all(b.finding in FINDINGS and b.w > 0 for b in boxes)
    col = scan(collection)
    assert len(col.train_val) + len(col.test) == len(entries)
    assert {p.parent.name for p in col.images.values()} >= {"images_001", "images_002"}
    assert not col.patients(col.train_val) & col.patients(col.test)


def test_findings_and_the_2020_revision(tmp_path):
    assert parse_findings("Effusion|Atelectasis", "x") == ("Atelectasis", "Effusion")
    assert parse_findings("No Finding", "x") == ()
    with pytest.raises(ChestXray14Error, match="x: unknown finding 'Covid'"):
        parse_findings("Covid|Mass", "x")
    with pytest.raises(ChestXray14Error, match="together with findings"):
        parse_findings("No Finding|Mass", "x")
    root = tmp_path / "c"
    write_chestxray14_collection(root, patients=6, size=32, revision="2020", nested=True)
    assert not (root / "Data_Entry_2017.csv").exists()
    col = scan(root)
    assert col.data_entry.name == "Data_Entry_2017_v2020.csv"
    assert all(p.parent.name == "images" for p in col.images.values())


def _copy(collection: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(collection, dest)
    return dest


def test_a_patient_on_both_sides_is_refused(collection, tmp_path):
    root = _copy(collection, tmp_path / "c")
    test = (root / "test_list.txt").read_text().split()
    entries = read_data_entry(root / "Data_Entry_2017.csv")
    counts: dict[str, int] = {}
    for image in test:
        counts[entries[image].patient] = counts.get(entries[image].patient, 0) + 1
    patient = next(p for p, n in counts.items() if n > 1)
    moved = next(i for i in test if entries[i].patient == patient)
    (root / "test_list.txt").write_text("\n".join(i for i in test if i != moved) + "\n")
    train = (root / "train_val_list.txt").read_text().split()
    (root / "train_val_list.txt").write_text("\n".join([*train, moved]) + "\n")
    with pytest.raises(ChestXray14Error, match=rf"patient {patient} .* the split must be by "
                                               "patient"):
        scan(root)
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    with pytest.raises(ChestXray14Error, match=r"is also in test_list\.txt"):
        scan(root)


@pytest.mark.parametrize("edit, message", [
    (lambda r: (r / "train_val_list.txt").write_text("99999999_000.png\n"),
     r"train_val_list\.txt:1: 99999999_000\.png is not in Data_Entry_2017\.csv"),
    (lambda r: [p.unlink() for p in r.glob("images_*/*.png")], r"listed image\(s\) not found"),
    (lambda r: (r / "Data_Entry_2017.csv").write_text("Image Index,Labels,Patient ID\n"),
     r"Data_Entry_2017\.csv:1: missing column 'Finding Labels'"),
    (lambda r: (r / "test_list.txt").unlink(), r"test_list\.txt: the official split list"),
])
def test_broken_collections_are_named(collection, tmp_path, edit, message):
    root = _copy(collection, tmp_path / "c")
    edit(root)
    with pytest.raises(ChestXray14Error, match=message):
        build(root, tmp_path / "ds", ChestXray14Config(**SMALL), progress=False)
    assert not (tmp_path / "ds").exists()


def test_binary_task_labels():
    from medtl.studies.boit2019.reader import Entry

    e = Entry("a.png", ("Mass",), "1", "PA", "0", "x")
    n = Entry("b.png", (), "2", "PA", "0", "x")
    assert label_of(e, ChestXray14Config()) == 1 and label_of(n, ChestXray14Config()) == 0
    only = ChestXray14Config(positive_findings=["Pneumonia"], binary_negatives="no_finding")
    assert label_of(e, only) is None and label_of(n, only) == 0
    multi = ChestXray14Config(task="multilabel")
    assert label_of(e, multi) == [int(f == "Mass") for f in FINDINGS]
    with pytest.raises(ConfigError, match="unknown finding 'Pneumonitis'"):
        from_mapping(ChestXray14Config, {"positive_findings": ["Pneumonitis"]})


@pytest.fixture(scope="module")
def binary(collection, tmp_path_factory) -> Path:
    return build(collection, tmp_path_factory.mktemp("b") / "ds",
                 ChestXray14Config(**SMALL, val_fraction=0.25), progress=False)


def test_binary_sets_read_back_through_caffe_with_patient_disjoint_splits(binary, collection):
    report = check_dataset(binary)
    assert report.ok, [d.problems for d in report.databases] + report.problems
    assert all(len(s) == 1 for s in _split_patients(binary / "splits.csv").values())
    rows = list(csv.DictReader((binary / "splits.csv").read_text().splitlines()))
    val = {r["group"] for r in rows if r["role"] == "val"}
    train = {r["group"] for r in rows if r["role"] == "train"}
    assert val and train and not val & train
    m = json.loads((binary / "manifest.json").read_text())
    assert m["protocol"]["task"]["assumed"]
    balance = m["counts"]
    total = sum(balance[r]["images"] for r in ("train", "val", "test"))
    assert total == len(read_data_entry(collection / "Data_Entry_2017.csv"))
    for r in ("train", "val", "test"):
        b = balance[r]["binary"]
        assert b["negative"] == balance[r]["no_finding"]
        assert b["positive"] + b["negative"] == balance[r]["images"]
    assert (binary / "class_balance.csv").read_text().startswith("set,class,images\n")


def _lmdb(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The stored records and labels of an LMDB, in Caffe's order."""
    records = list(read_lmdb(path))
    return (np.stack([image for _, image, _ in records]),
            np.array([label for _, _, label in records], np.float32))


def test_stored_records_are_the_preprocessed_centre_crops(binary, collection):
    data, labels = _lmdb(binary / "test")
    with open(binary / "test_index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert data.shape[1:] == (3, 28, 28) and labels.ndim == 1 and data.dtype == np.uint8
    col = scan(collection)
    first = index[0]
    gray = load_resized(col.images[first["image"]], 32)[2:30, 2:30]
    expect = (gray[None] - np.array(MEAN_BGR, np.float32).reshape(3, 1, 1)) * INPUT_SCALE
    # stored 8-bit; the nets' Data layer applies the manifest's caffe_transform
    transform = json.loads((binary / "manifest.json").read_text())["notes"]["caffe_transform"]
    mean = np.array(transform["mean_value"], np.float32).reshape(3, 1, 1)
    net_input = (data[0].astype(np.float32) - mean) * np.float32(transform["scale"])
    np.testing.assert_allclose(net_input, expect, rtol=1e-5, atol=1e-4)
    assert labels[0] == float(first["label"])
    caffe_data, _ = read_through_caffe(next(d for d in json.loads(
        (binary / "manifest.json").read_text())["databases"] if d["role"] == "test"), binary)
    np.testing.assert_array_equal(caffe_data, data)


def test_multilabel_and_augmented_sets_are_deterministic(collection, tmp_path):
    cfg = ChestXray14Config(**SMALL, task="multilabel", plain_train=False,
                            augmented_train=True, train_augmented_copies=2, seed=3)
    a = build(collection, tmp_path / "a", cfg, progress=False)
    b = build(collection, tmp_path / "b", cfg, progress=False)
    report = check_dataset(a)
    assert report.ok, [d.problems for d in report.databases]
    da, la = read_hdf5_list(a / "train_augmented" / "train_augmented.txt")
    db, lb = read_hdf5_list(b / "train_augmented" / "train_augmented.txt")
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(la, lb)
    assert la.shape[1] == 14 and set(np.unique(la)) <= {0.0, 1.0}
    with open(a / "train_augmented_index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["copy"] for r in rows} == {"0", "1"}
    copies: dict[str, list[int]] = {}
    for r in rows:
        copies.setdefault(r["image"], []).append(int(r["rank"]))
    ra, rb = next(v for v in copies.values())
    assert not np.array_equal(da[ra], da[rb])            # two different random transforms
    for r in rows[:5]:
        expect = [int(f in r["findings"].split("|")) for f in FINDINGS]
        assert la[int(r["rank"])].tolist() == expect
    other = build(collection, tmp_path / "c", ChestXray14Config(
        **SMALL, task="multilabel", plain_train=False, augmented_train=True,
        train_augmented_copies=2, seed=4), progress=False)
    assert not np.array_equal(
        read_hdf5_list(other / "train_augmented" / "train_augmented.txt")[0], da)


def test_keras_transform_matrix_and_pure_shift():
    aug = KerasAugment(width_shift_range=0.25)
    p = {"theta": 0.0, "tx": 0.0, "ty": 2.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
         "flip": False}
    img = np.arange(64, dtype=np.float32).reshape(8, 8)
    out = aug.apply(img, p)
    np.testing.assert_allclose(out[:, :6], img[:, 2:])            # output col j = input j+2
    np.testing.assert_allclose(out[:, 6:], img[:, 7:8].repeat(2, 1))   # fill "nearest"
    rot = dict(p, ty=0.0, theta=90.0)
    m = transform_matrix(rot, 9, 9)
    # keras_preprocessing turns about (rows / 2 + 0.5, cols / 2 + 0.5) in index coordinates
    np.testing.assert_allclose(m @ [5.0, 5.0, 1], [5.0, 5.0, 1], atol=1e-9)
    np.testing.assert_allclose(m @ [5.0, 6.0, 1], [4.0, 5.0, 1], atol=1e-9)
    flip = dict(p, ty=0.0, flip=True)
    np.testing.assert_allclose(aug.apply(img, flip), img[:, ::-1])
    rng = np.random.default_rng(0)
    full = KerasAugment(40, 0.2, 0.2, 0.2, 0.2, True)
    draws = [full.draw(rng, 32, 32) for _ in range(200)]
    assert max(abs(d["theta"]) for d in draws) <= 40 and max(abs(d["tx"]) for d in draws) <= 6.4
    assert all(0.8 <= d["zx"] <= 1.2 for d in draws)
    assert 60 < sum(d["flip"] for d in draws) < 140


def test_features_of_the_stored_sets(binary, collection, caffe, tmp_path):
    from medtl.datasets.features import FeatureError, extract
    from medtl.surgery import random_weights

    deploy = tmp_path / "d.prototxt"
    deploy.write_text(
        'name: "t" layer { name: "data" type: "Input" top: "data" input_param { shape { '
        'dim: 1 dim: 3 dim: 28 dim: 28 } } } layer { name: "pool" type: "Pooling" '
        'bottom: "data" top: "pool" pooling_param { pool: AVE kernel_size: 7 stride: 7 } } '
        'layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
        'inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }')
    weights = random_weights(deploy, tmp_path / "w.caffemodel", seed=0)
    out = extract(deploy, weights, binary / "val", tmp_path / "f.npz", blob="pool",
                  mean_value=MEAN_BGR, scale=INPUT_SCALE, progress=False)
    stored, labels = _lmdb(binary / "val")                # 8-bit: the port's transform given
    data = (stored - np.array(MEAN_BGR, np.float32).reshape(1, 3, 1, 1)) * INPUT_SCALE
    got = np.load(out)
    expect = data.reshape(len(data), 3, 4, 7, 4, 7).mean(axis=(3, 5)).reshape(len(data), -1)
    np.testing.assert_allclose(got["features"], expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["label"], labels)
    multi = build(collection, tmp_path / "m", ChestXray14Config(**SMALL, task="multilabel"),
                  progress=False)                          # HDF5, stored preprocessed
    with pytest.raises(FeatureError, match="stored preprocessed"):
        extract(deploy, weights, multi / "val" / "val.txt", tmp_path / "g.npz",
                mean_value=(1.0,), progress=False)
