"""ChestX-ray14 as a user meets it at full scale, from corrupted copies of the kit's phantoms:
a partial download, PNGs in any sub-folder, the official lists absent, 8-bit records that
Caffe's Data layer normalises, and a dataset prepared with `medtl data` used by `medtl run`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest
from spec_helpers import spec_from

from medtl import cli, infer
from medtl.config import ConfigError
from medtl.datasets.check import check_dataset
from medtl.datasets.manifest import read_manifest
from medtl.experiments.plan import load_plan, with_overrides
from medtl.generate import DataPaths, build_nets
from medtl.nets.densenet import INPUT_SCALE, MEAN_BGR
from medtl.paths import REPO
from medtl.studies.boit2019 import protocol
from medtl.studies.boit2019.adapter import ChestXray14Adapter
from medtl.studies.boit2019.dataset import MISSING_TXT, ChestXray14Config, build, load_resized
from medtl.studies.boit2019.phantoms import write_chestxray14_collection
from medtl.studies.boit2019.reader import ChestXray14Error, read_data_entry, scan

SMALL = dict(image_size=32, crop_size=28)
CHEST_SPEC = REPO / "experiments/boit2019/chestxray14_binary.yaml"


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cxr") / "ChestX-ray14"
    write_chestxray14_collection(root, patients=24, size=64, per_folder=15, seed=5)
    return root


def _copy(collection: Path, dest: Path) -> Path:
    shutil.copytree(collection, dest)
    return dest


def _splits(dest: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((dest / "splits.csv").read_text().splitlines()))


# ------------------------------------------------------------------ partial downloads

def test_a_partial_download_builds_from_the_images_present_and_records_the_missing(
        collection, tmp_path, capsys):
    root = _copy(collection, tmp_path / "c")
    train_val = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    gone = sorted([train_val[0], train_val[5], test[0]])
    for png in root.rglob("*.png"):
        if png.name in gone:
            png.unlink()
    dest = build(root, tmp_path / "ds", ChestXray14Config(**SMALL), progress=False)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "not found" in ln]
    listed = len(train_val) + len(test)
    assert len(lines) == 1 and f"3 of {listed} listed images not found" in lines[0]
    m = read_manifest(dest)
    assert m["skipped"]["listed image not found (partial download)"] == 3
    assert m["notes"]["images"] == {"listed": listed, "present": listed - 3, "missing": 3,
                                    "missing_file": MISSING_TXT}
    assert sorted((dest / MISSING_TXT).read_text().split()) == gone
    kept = {r["candidate_id"] for r in _splits(dest)}
    assert not kept & set(gone)
    assert sum(m["counts"][r]["images"] for r in ("train", "val", "test")) == listed - 3
    assert check_dataset(dest).ok


def test_a_download_without_any_listed_image_is_refused(collection, tmp_path):
    root = _copy(collection, tmp_path / "c")
    for png in list(root.rglob("*.png")):
        png.unlink()
    with pytest.raises(ChestXray14Error, match=r"c: all \d+ listed image\(s\) not found \("
                                               "searched for \\*\\.png in every sub-folder"):
        build(root, tmp_path / "ds", ChestXray14Config(**SMALL), progress=False)
    assert not (tmp_path / "ds").exists()


def test_pngs_are_found_in_any_sub_folder_and_a_name_found_twice_is_named(collection,
                                                                          tmp_path):
    root = _copy(collection, tmp_path / "c")
    pngs = sorted(root.rglob("*.png"))
    for i, png in enumerate(pngs):
        folder = (root / "images_001" / "images" if i % 3 == 0 else
                  root / "downloads" / "batch 2" / "images" if i % 3 == 1 else root)
        folder.mkdir(parents=True, exist_ok=True)
        png.rename(folder / png.name)
    col = scan(root)
    assert len(col.images) == len(pngs) and not col.missing
    assert {p.parent.relative_to(root).as_posix() for p in col.images.values()} == {
        "images_001/images", "downloads/batch 2/images", "."}
    (root / "stray").mkdir()
    shutil.copy(root / "images_001" / "images" / pngs[0].name, root / "stray" / pngs[0].name)
    with pytest.raises(ChestXray14Error, match=rf"{pngs[0].name} is also at"):
        scan(root)


# ------------------------------------------------------------------ no official lists

def test_without_the_lists_a_seeded_patient_split_is_built_and_never_called_official(
        collection, tmp_path):
    root = _copy(collection, tmp_path / "c")
    (root / "train_val_list.txt").unlink()
    (root / "test_list.txt").unlink()
    cfg = ChestXray14Config(**SMALL, val_fraction=0.25, test_fraction=0.3, seed=2)
    a = build(root, tmp_path / "a", cfg, progress=False)
    b = build(root, tmp_path / "b", cfg, progress=False)
    other = build(root, tmp_path / "o", ChestXray14Config(**SMALL, val_fraction=0.25,
                                                          test_fraction=0.3, seed=3),
                  progress=False)
    assert (a / "splits.csv").read_text() == (b / "splits.csv").read_text()
    assert (a / "splits.csv").read_text() != (other / "splits.csv").read_text()
    rows = _splits(a)
    roles: dict[str, set[str]] = {}
    for r in rows:
        roles.setdefault(r["group"], set()).add(r["role"])
    assert all(len(v) == 1 for v in roles.values())              # no patient in two sets
    assert {r for v in roles.values() for r in v} == {"train", "val", "test"}
    assert len(rows) == len(read_data_entry(root / "Data_Entry_2017.csv"))
    test_patients = sum(1 for v in roles.values() if v == {"test"})
    assert test_patients == round(0.3 * 24)
    m = read_manifest(a)
    assert "official" not in m["notes"]["split"].replace("not the official", "")
    assert "built from Patient ID" in m["notes"]["split"]
    assert m["notes"]["split_source"] == "patient_id"
    assert not any("list.txt" in s["path"] for s in m["sources"])
    assert check_dataset(a).ok


def test_the_split_option_chooses_between_the_lists_and_patient_ids(collection, tmp_path):
    official = build(collection, tmp_path / "a", ChestXray14Config(**SMALL), progress=False)
    assert read_manifest(official)["notes"]["split"].startswith("official patient-level")
    assert read_manifest(official)["notes"]["split_source"] == "official"
    forced = build(collection, tmp_path / "b", ChestXray14Config(**SMALL, split="patients"),
                   progress=False)
    notes = read_manifest(forced)["notes"]
    assert notes["split_source"] == "patient_id" and "split=patients" in notes["split"]
    root = _copy(collection, tmp_path / "c")
    (root / "train_val_list.txt").unlink()
    (root / "test_list.txt").unlink()
    with pytest.raises(ChestXray14Error, match=r"train_val_list\.txt: the official split "
                                               "list is missing .*split=patients"):
        build(root, tmp_path / "d", ChestXray14Config(**SMALL, split="official"),
              progress=False)
    (root / "test_list.txt").write_text((collection / "test_list.txt").read_text())
    with pytest.raises(ChestXray14Error, match=r"train_val_list\.txt: the official split "
                                               r"list is missing while test_list\.txt"):
        build(root, tmp_path / "e", ChestXray14Config(**SMALL), progress=False)


# ------------------------------------------------------------------ 8-bit records

def test_binary_records_are_8bit_and_caffe_reads_them_as_the_nets_input(collection, tmp_path,
                                                                        caffe):
    dest = build(collection, tmp_path / "ds", ChestXray14Config(**SMALL), progress=False)
    m = read_manifest(dest)
    assert m["notes"]["builder_version"] == ChestXray14Adapter.version == 3
    assert m["notes"]["caffe_transform"] == {"mean_value": list(MEAN_BGR),
                                             "scale": INPUT_SCALE}
    test_db = next(d for d in m["databases"] if d["role"] == "test")
    assert (test_db["format"], test_db["dtype"], test_db["shape"]) == ("lmdb", "uint8",
                                                                      [3, 28, 28])
    with lmdb.open(str(dest / "test"), readonly=True, lock=False) as env:
        sizes = [len(v) for _, v in env.begin().cursor()]
    assert max(sizes) < 3 * 28 * 28 + 64                           # 1 byte a value
    # what a run's TEST net reads: the centre crop minus the port's mean, times its scale
    fold = _FoldLike(test=str(dest / "test"), test_size=test_db["count"],
                     mean_value=MEAN_BGR, scale=INPUT_SCALE)
    cfg = protocol.CONFIGURATIONS[0]
    path, _ = infer.test_net(cfg, fold, tmp_path / "test.prototxt")
    layer = next(layer for layer in _layers(path) if layer.type == "Data")
    assert list(layer.transform_param.mean_value) == pytest.approx(MEAN_BGR)
    assert layer.transform_param.scale == pytest.approx(INPUT_SCALE)
    assert layer.transform_param.crop_size == 0
    net = caffe.Net(str(_data_only(path, tmp_path)), caffe.TEST)
    net.forward()
    index = list(csv.DictReader((dest / "test_index.csv").read_text().splitlines()))
    gray = load_resized(scan(collection).images[index[0]["image"]], 32)[2:30, 2:30]
    expect = (gray[None] - np.array(MEAN_BGR, np.float32).reshape(3, 1, 1)) * INPUT_SCALE
    np.testing.assert_allclose(net.blobs["data"].data[0], expect, rtol=1e-6, atol=1e-6)
    assert net.blobs["label"].data[0] == float(index[0]["label"])


class _FoldLike:
    backend = "lmdb"
    mean_file = None

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


def _layers(path: Path):
    from medtl.prototxt import read_net

    return list(read_net(path).layer)


def _data_only(path: Path, folder: Path) -> Path:
    """The TEST net's data layer alone (the DenseNet body is not needed to read records)."""
    from medtl.caffe_env import caffe_pb2
    from medtl.prototxt import read_net

    net = read_net(path)
    out = caffe_pb2().NetParameter()
    out.layer.add().CopyFrom(next(layer for layer in net.layer if layer.type == "Data"))
    out.layer[0].data_param.batch_size = 1
    dest = folder / "data_only.prototxt"
    dest.write_text(str(out))
    return dest


# ------------------------------------------------------------------ medtl run on a prepared set

def _spec(tmp_path: Path, name: str, prepared: Path, **options) -> Path:
    return spec_from(tmp_path, name, CHEST_SPEC, dataset={
        "builder": "chestxray14", "prepared": str(prepared),
        "options": {"task": "binary", "image_size": 40, "crop_size": 32,
                    "val_fraction": 0.34, **options}})


def test_medtl_run_uses_a_dataset_prepared_with_medtl_data(results_root, tmp_path, capsys):
    root = tmp_path / "ChestX-ray14"
    write_chestxray14_collection(root, patients=6, max_images_per_patient=1, size=48, seed=1,
                                 test_fraction=0.35)
    prepared = tmp_path / "prepared"
    args = ["data", "chestxray14", "--root", str(root), "--out", str(prepared),
            "--no-progress", "--set", "image_size=40", "--set", "crop_size=32",
            "--set", "val_fraction=0.34"]
    assert cli.main([*args, "--set", "augmented_train=true"]) == 0
    plan = load_plan(_spec(tmp_path, "prep", prepared))
    study = plan.study
    assert study.dataset_dir == prepared.resolve()
    study.prepare(progress=False)
    assert not (results_root / "datasets").exists()                 # nothing rebuilt
    fe, ft = (next(c for c in plan.experiment.configurations if c.id == i)
              for i in ("densenet121-boit_fe", "densenet121-boit_ft"))
    for cfg, folder in ((fe, "train"), (ft, "train_augmented")):
        fold = study.fold_data_for(cfg, 1, 1.0, 1)
        assert Path(fold.train) == prepared.resolve() / folder
        assert fold.mean_value == MEAN_BGR and fold.scale == INPUT_SCALE
        nets = build_nets(with_overrides(cfg, plan.experiment),
                          DataPaths(fold.train, fold.val, fold.mean_file, fold.backend,
                                    fold.mean_value, fold.scale))
        data = nets["train"].layer[0]
        assert data.type == "Data" and data.data_param.source == fold.train
        assert list(data.transform_param.mean_value) == pytest.approx(MEAN_BGR)
    # a relative path is taken from the spec's folder
    assert load_plan(_spec(tmp_path, "rel", Path("prepared"))).study.dataset_dir == \
        prepared.resolve()

    with pytest.raises(ConfigError, match=r"dataset\.prepared: .*prepared was built with "
                                          r"val_fraction=0\.34, the spec needs 0\.5"):
        load_plan(_spec(tmp_path, "other", prepared, val_fraction=0.5)).study.prepare()
    with pytest.raises(ConfigError, match=r"holds no manifest\.json .*medtl data chestxray14"):
        load_plan(_spec(tmp_path, "none", tmp_path / "nothing")).study.prepare()
    plain = tmp_path / "plain"
    assert cli.main([*args[:5], str(plain), *args[6:]]) == 0
    with pytest.raises(ConfigError, match=r"built with augmented_train=False, the spec "
                                          r"needs True \(build it with --set "
                                          r"augmented_train=true"):
        load_plan(_spec(tmp_path, "plain", plain)).study.prepare()
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["notes"]["builder_version"] = 2
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="built by version 2 of the chestxray14 builder, "
                                          "this kit's is 3"):
        load_plan(_spec(tmp_path, "old", prepared)).study.prepare()


def test_a_garbage_data_entry_file_is_one_line_naming_it(tmp_path):
    entry = tmp_path / "Data_Entry_2017.csv"
    entry.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary, not a table")
    with pytest.raises(ChestXray14Error, match=r"Data_Entry_2017\.csv: not a UTF-8 text file"):
        read_data_entry(entry)
