"""Dataset core: strict configs, folds, LMDB/HDF5/mean writers read back through Caffe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from medtl import config
from medtl.config import ConfigError, option
from medtl.datasets.check import check_dataset, read_through_caffe
from medtl.datasets.dbset import DatabaseSet, DbSpec
from medtl.datasets.folds import (
    FoldError,
    leave_one_out,
    patient_folds,
    random_item_folds,
    read_folds,
    write_folds,
)
from medtl.datasets.hdf5_writer import Hdf5Writer, read_hdf5_list
from medtl.datasets.lmdb_writer import LmdbWriter, read_lmdb, write_lmdb
from medtl.datasets.manifest import Manifest, read_manifest
from medtl.datasets.mean import read_binaryproto, write_binaryproto
from medtl.provenance import assumed, paper


@dataclass(frozen=True)
class _Cfg:
    views: int = option(200, "views", paper(200, "Shin 2016 Sec. II"))
    window: tuple[float, float] = option((-100.0, 200.0), "HU", paper((-100.0, 200.0), "Sec. II"))
    shift: float = option(3.0, "mm", assumed(3.0, "Roth's pipeline"))
    mode: str = option("equal", "prior", choices=("equal", "biased"))
    path: str | None = option(None, "a file")


def test_config_rejects_unknown_keys_and_bad_values_by_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'viewz'"):
        config.from_mapping(_Cfg, {"viewz": 3})
    with pytest.raises(ConfigError, match="views: expected an integer"):
        config.from_mapping(_Cfg, {"views": "many"})
    with pytest.raises(ConfigError, match="mode: 'flat' is not one of"):
        config.from_mapping(_Cfg, {"mode": "flat"})
    with pytest.raises(ConfigError, match="window: expected 2 values"):
        config.from_mapping(_Cfg, {"window": [1, 2, 3]})
    bad = tmp_path / "c.yaml"
    bad.write_text("shift: 2\nvies: 1\n")
    with pytest.raises(ConfigError, match=rf"{bad}: unknown key 'vies'"):
        config.load(_Cfg, bad)


def test_config_file_then_overrides_and_provenance_marks_user_changes(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("shift: 1.5\nwindow: [-50, 150]\n")
    cfg = config.load(_Cfg, f, config.parse_overrides(["views=20", "path=/x/y"]))
    assert (cfg.views, cfg.window, cfg.shift, cfg.path) == (20, (-50.0, 150.0), 1.5, "/x/y")
    prov = config.protocol_values(cfg)
    assert prov["views"]["set_by_user"] and prov["views"]["default"]["source"] == \
        "Shin 2016 Sec. II"
    assert prov["shift"]["set_by_user"] and "assumed" in prov["shift"]["default"]
    assert config.protocol_values(_Cfg())["shift"] == {"value": 3.0, "assumed": "Roth's pipeline"}
    assert "mode" not in prov and config.to_dict(cfg)["path"] == "/x/y"


def test_patient_folds_are_disjoint_balanced_and_survive_csv(tmp_path):
    patients = [f"P{i:02d}" for i in range(10)]
    folds = patient_folds(patients, 3, seed=4, weights={p: float(i) for i, p in
                                                        enumerate(patients)})
    assert sorted(folds.fold_of) == patients and set(folds.fold_of.values()) == {1, 2, 3}
    folds.check_disjoint()
    sizes = [len(folds.units(f)) for f in (1, 2, 3)]
    assert max(sizes) - min(sizes) <= 2
    assert patient_folds(patients, 3, seed=4).fold_of == patient_folds(patients, 3,
                                                                       seed=4).fold_of
    back = read_folds(write_folds(tmp_path / "folds.csv", folds))
    assert back.fold_of == folds.fold_of and back.patient_disjoint
    loo = leave_one_out(patients)
    assert loo.k == 10 and all(len(loo.units(f)) == 1 for f in range(1, 11))
    rnd = random_item_folds({f"P0:{s}": "P0" for s in range(5)} |
                            {f"P1:{s}": "P1" for s in range(5)}, 5, seed=1)
    assert not rnd.patient_disjoint and rnd.k == 5


def test_fold_csv_errors_name_file_and_line(tmp_path):
    f = tmp_path / "folds.csv"
    f.write_text("unit,patient_id,fold\nA,A,1\nB,B,x\n")
    with pytest.raises(FoldError, match=rf"{f}:3: fold 'x' is not an integer"):
        read_folds(f)
    f.write_text("unit,patient_id,fold\nA,A,1\nA:1,A,2\n")
    with pytest.raises(FoldError, match=r"fold 2 has no units|patient A is in folds"):
        read_folds(f).check_disjoint()
    f.write_text("unit,patient_id,fold\nA,A,1\nB,B,3\n")
    with pytest.raises(FoldError, match="fold 2 has no units"):
        read_folds(f)


def test_lmdb_map_grows_instead_of_failing_and_keys_give_rank_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 3, 64, 64), dtype=np.uint8)
    order = rng.permutation(40)
    with LmdbWriter(tmp_path / "db", map_size=1 << 16, commit_every=7) as w:  # 64 KiB map
        for i in range(40):
            w.put(int(order[i]), images[i], i % 2)
    back = list(read_lmdb(tmp_path / "db"))
    assert len(back) == 40
    for key, image, label in back:
        i = int(np.nonzero(order == int(key))[0][0])
        np.testing.assert_array_equal(image, images[i])
        assert label == i % 2


def test_write_lmdb_leaves_nothing_behind_on_failure(tmp_path):
    def records():
        yield 0, np.zeros((3, 4, 4), np.uint8), 0
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_lmdb(tmp_path / "db", records())
    assert list(tmp_path.iterdir()) == []


def _dataset(tmp_path: Path, fmt: str, images: np.ndarray, labels, *, dtype="uint8",
             label_shape=()) -> Path:
    dest = tmp_path / f"ds_{fmt}"
    dest.mkdir()
    manifest = Manifest("unit", __name__, 0, {}, {}, ["a", "b"])
    dbs = DatabaseSet(dest, dest, manifest)
    name = f"fold1/train_{fmt}"
    dbs.add(DbSpec(name, fmt, "train", 1, len(images), images.shape[1:], dtype=dtype,
                   label_shape=label_shape, mean=True))
    ranks = np.random.default_rng(3).permutation(len(images))
    for i in range(len(images)):
        dbs.put(name, int(ranks[i]), images[i], labels[i], f"P{i % 3}")
    dbs.close()
    manifest.write(dest)
    return dest


@pytest.mark.parametrize("fmt,dtype", [("lmdb", np.uint8), ("lmdb", np.float32),
                                       ("hdf5", np.float32)])
def test_records_written_equal_what_caffe_reads_back(tmp_path, fmt, dtype):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (23, 3, 8, 8)).astype(dtype)
    if dtype == np.float32:
        images += rng.random(images.shape).astype(np.float32)
    labels = [int(v) for v in rng.integers(0, 2, 23)]
    dest = _dataset(tmp_path, fmt, images, labels, dtype=np.dtype(dtype).name)
    db = read_manifest(dest)["databases"][0]
    data, got = read_through_caffe(db, dest, batch=5)  # 23 records, ragged last batch
    ranks = np.random.default_rng(3).permutation(23)
    np.testing.assert_array_equal(data, images[np.argsort(ranks)].astype(np.float32))
    np.testing.assert_array_equal(got, np.array(labels)[np.argsort(ranks)])
    mean = read_binaryproto(dest / db["mean_file"])
    np.testing.assert_allclose(mean, images.mean(0), rtol=1e-5, atol=1e-4)
    report = check_dataset(dest)
    assert report.ok, report
    assert db["patient_counts"] == {"P0": 8, "P1": 8, "P2": 7}


def test_multi_hot_labels_go_to_hdf5_and_caffe_reads_the_vectors(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.random((9, 3, 4, 4)).astype(np.float32)
    labels = [tuple(float(v) for v in rng.integers(0, 2, 6)) for _ in range(9)]
    dest = _dataset(tmp_path, "hdf5", images, labels, dtype="float32", label_shape=(6,))
    db = read_manifest(dest)["databases"][0]
    _, got = read_through_caffe(db, dest, batch=4)
    ranks = np.random.default_rng(3).permutation(9)
    np.testing.assert_array_equal(got, np.array(labels, np.float32)[np.argsort(ranks)])
    assert check_dataset(dest).ok


def test_hdf5_sets_split_into_files_under_the_size_limit(tmp_path):
    w = Hdf5Writer(tmp_path, "train", 10, (3, 4, 4), max_file_bytes=4 * 48 * 3)
    for r in range(10):
        w.put(r, np.full((3, 4, 4), r, np.float32), r % 2)
    w.close()
    assert len(w.files) == 4 and w.per_file == 3
    data, labels = read_hdf5_list(w.list_file)
    np.testing.assert_array_equal(data[:, 0, 0, 0], np.arange(10))
    np.testing.assert_array_equal(labels, np.arange(10) % 2)


def test_mean_binaryproto_is_what_caffe_subtracts(caffe, tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (6, 3, 5, 5), dtype=np.uint8)
    write_lmdb(tmp_path / "db", ((i, images[i], 0) for i in range(6)))
    mean = rng.random((3, 5, 5)).astype(np.float32) * 100
    write_binaryproto(tmp_path / "mean.binaryproto", mean)
    np.testing.assert_array_equal(read_binaryproto(tmp_path / "mean.binaryproto"), mean)
    net = caffe.NetSpec()
    net.data, net.label = caffe.layers.Data(
        source=str(tmp_path / "db"), backend=caffe.params.Data.LMDB, batch_size=6, ntop=2,
        transform_param=dict(mean_file=str(tmp_path / "mean.binaryproto")))
    (tmp_path / "net.prototxt").write_text(str(net.to_proto()))
    reader = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    out = reader.forward()["data"].copy()  # the blob dies with the net: copy first
    np.testing.assert_allclose(out, images - mean[None], rtol=1e-6, atol=1e-4)


def test_check_reports_a_manifest_that_does_not_match(tmp_path):
    images = np.zeros((4, 3, 4, 4), np.uint8)
    dest = _dataset(tmp_path, "lmdb", images, [0, 1, 1, 1])
    text = (dest / "manifest.json").read_text().replace('"1": 3', '"1": 2')
    (dest / "manifest.json").write_text(text)
    report = check_dataset(dest)
    assert not report.ok
    assert any("label counts" in p for d in report.databases for p in d.problems)
    assert not check_dataset(tmp_path / "nowhere").ok
