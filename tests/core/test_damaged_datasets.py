"""Damaged databases are named before Caffe opens them (issue 12 item 11).

The manifest records each database's file sizes and sha256 when the dataset is written;
`medtl data check` and the runner verify them first. Before, Caffe (or LMDB in Python) read
the damaged file: a truncated data.mdb killed the process with SIGBUS, flipped bytes ended in
a Caffe CHECK abort. The checks run `medtl data check` in a subprocess so that a crash would
fail the test, not the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spec_helpers import tiny_ln_spec

from medtl import cli
from medtl.datasets.dbset import DatabaseSet, DbSpec
from medtl.datasets.integrity import STAMPS, DamagedDatabaseError, verify_sources
from medtl.datasets.manifest import Manifest, read_manifest
from medtl.experiments import runner
from medtl.experiments.plan import load_plan
from medtl.io import sha256_file


def _dataset(root: Path, fmt: str, n: int = 120) -> Path:
    """A small dataset as the builders write it: one train database of `fmt`."""
    dest = root / f"ds_{fmt}"
    dest.mkdir()
    manifest = Manifest("unit", __name__, 0, {}, {}, ["a", "b"])
    dbs = DatabaseSet(dest, dest, manifest)
    name = f"fold1/train_{fmt}"
    dtype = "uint8" if fmt == "lmdb" else "float32"
    dbs.add(DbSpec(name, fmt, "train", 1, n, (3, 16, 16), dtype=dtype, mean=True))
    rng = np.random.default_rng(0)
    for i in range(n):
        dbs.put(name, i, rng.integers(0, 256, (3, 16, 16)).astype(dtype), i % 2, f"P{i % 3}")
    dbs.close()
    manifest.write(dest)
    return dest


def _check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtl", "data", "check", str(path)],
                          capture_output=True, text=True, timeout=300)


def _flip(path: Path, every: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(8192, len(data), every):   # past LMDB's two meta pages
        data[offset + 40] ^= 0x5A
    path.write_bytes(bytes(data))


def test_the_manifest_records_size_and_sha256_of_every_database_file(tmp_path):
    lmdb_ds, hdf5_ds = _dataset(tmp_path, "lmdb"), _dataset(tmp_path, "hdf5")
    db = read_manifest(lmdb_ds)["databases"][0]
    data = lmdb_ds / "fold1/train_lmdb/data.mdb"
    assert db["files"]["fold1/train_lmdb/data.mdb"] == {"bytes": data.stat().st_size,
                                                        "sha256": sha256_file(data)}
    assert set(db["files"]) == {"fold1/train_lmdb/data.mdb", "fold1/train_mean.binaryproto"}
    db = read_manifest(hdf5_ds)["databases"][0]
    assert set(db["files"]) == {"fold1/train_hdf5/train_hdf5.txt",
                                "fold1/train_hdf5/train_hdf5_000.h5",
                                "fold1/train_mean.binaryproto"}
    assert _check(lmdb_ds).returncode == 0 and _check(hdf5_ds).returncode == 0


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_data_check_names_a_damaged_lmdb_instead_of_crashing(tmp_path, damage):
    ds = _dataset(tmp_path, "lmdb")
    data = ds / "fold1/train_lmdb/data.mdb"
    if damage == "truncated":
        os.truncate(data, data.stat().st_size // 2)
    else:
        _flip(data)
    done = _check(ds)
    assert done.returncode == 1, (done.returncode, done.stderr[-1500:])   # not SIGBUS/SIGABRT
    assert f"damaged database {ds}/fold1/train_lmdb: fold1/train_lmdb/data.mdb" in done.stdout
    assert ("(truncated)" if damage == "truncated" else "(changed bytes)") in done.stdout
    assert done.stdout.strip().endswith("DOES NOT match its manifest")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_data_check_names_a_damaged_hdf5_file(tmp_path, damage):
    ds = _dataset(tmp_path, "hdf5")
    h5 = ds / "fold1/train_hdf5/train_hdf5_000.h5"
    if damage == "truncated":
        os.truncate(h5, h5.stat().st_size - 4096)
    else:
        _flip(h5, every=8192)   # HDF5Data would read the changed floats without a word
    done = _check(ds)
    assert done.returncode == 1, (done.returncode, done.stderr[-1500:])
    assert f"damaged database {ds}/fold1/train_hdf5/train_hdf5.txt: fold1/train_hdf5/" \
           "train_hdf5_000.h5" in done.stdout


def test_a_dataset_written_before_hashes_is_accepted_with_a_note_and_still_no_crash(tmp_path):
    ds = _dataset(tmp_path, "lmdb")
    manifest = json.loads((ds / "manifest.json").read_text())
    for db in manifest["databases"]:
        del db["files"]
    (ds / "manifest.json").write_text(json.dumps(manifest))
    done = _check(ds)
    assert done.returncode == 0, done.stdout + done.stderr[-1500:]
    assert "note: " in done.stdout and "records no content hashes" in done.stdout
    data = ds / "fold1/train_lmdb/data.mdb"
    os.truncate(data, data.stat().st_size // 2)   # without hashes: LMDB's own page count
    done = _check(ds)
    assert done.returncode == 1, (done.returncode, done.stderr[-1500:])
    assert f"{ds}/fold1/train_lmdb: damaged LMDB: data.mdb is truncated" in done.stdout


def test_verification_hashes_once_per_file_state_and_sees_a_touched_file(tmp_path,
                                                                          results_root):
    ds = _dataset(tmp_path, "lmdb")
    source = ds / "fold1/train_lmdb"
    assert verify_sources(source) == []
    assert len(list((results_root / STAMPS).glob("*.json"))) == 2   # data.mdb and the mean
    data = source / "data.mdb"
    before = data.stat()
    _flip(data)
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))   # same size, same mtime
    with pytest.raises(DamagedDatabaseError, match=f"^damaged database {source}: .*changed"):
        verify_sources(source)
    assert verify_sources(tmp_path) == [f"{tmp_path}: listed in no medtl dataset manifest; "
                                        "its files were not verified"]


def test_data_features_names_a_damaged_database_before_reading_it(tmp_path, capsys):
    ds = _dataset(tmp_path, "lmdb")
    source = ds / "fold1/train_lmdb"
    os.truncate(source / "data.mdb", (source / "data.mdb").stat().st_size - 4096)
    argv = ["data", "features", "--deploy", str(tmp_path / "deploy.prototxt"), "--weights",
            str(tmp_path / "w.caffemodel"), "--source", str(source), "--out",
            str(tmp_path / "f.h5")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: damaged database {source}: ")


def test_a_run_refuses_a_damaged_dataset_in_one_line_and_records_no_failure(
        tmp_path, results_root, capsys, caffe):
    spec = tiny_ln_spec(tmp_path, "damaged")
    plan = load_plan(spec)
    plan.study.prepare(progress=False)
    run = plan.runs[0]
    fold = plan.study.fold_data_for(run.config, run.fold, run.fraction, run.seed)
    _flip(Path(fold.train) / "data.mdb")
    capsys.readouterr()
    assert runner.carry_out(spec, run.run_id, progress=False) == 2
    err = capsys.readouterr().err.strip().splitlines()
    rel = Path(fold.train).relative_to(plan.study.dataset_dir)
    assert err == [f"error: damaged database {fold.train}: {rel}/data.mdb differs from its "
                   "sha256 in the manifest (changed bytes); remove the dataset and build it "
                   "again"]
    assert not (run.run_dir / "failed.json").exists()   # rebuilding the dataset is enough
