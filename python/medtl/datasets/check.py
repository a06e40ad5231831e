"""`medtl data check PATH`: read a dataset back through Caffe's own `Data` / `HDF5Data`
layers and compare what Caffe sees with the manifest (counts, shapes, class balance, patients,
folds, mean images, index files).

A Caffe CHECK failure would abort the process, so every database is first verified against
the sizes and sha256 its manifest recorded (`medtl.datasets.integrity`, always hashed here),
then validated in Python (present, not truncated, non-empty, records of the declared shape),
and problems are reported as findings naming the database.
"""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medtl.caffe_env import caffe, caffe_pb2
from medtl.datasets.folds import FoldError, read_folds
from medtl.datasets.integrity import verify_database
from medtl.datasets.lmdb_writer import from_datum, open_lmdb
from medtl.datasets.manifest import ManifestError, read_manifest
from medtl.datasets.mean import read_binaryproto
from medtl.errors import InputError


class CheckError(InputError):
    """A database Caffe cannot be asked to read (it would abort the process)."""


@dataclass
class DatabaseReport:
    path: str
    count: int = 0
    shape: tuple[int, ...] = ()
    label_counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class CheckReport:
    path: Path
    databases: list[DatabaseReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(d.ok for d in self.databases)


def _lmdb_entries(path: Path, shape: list[int]) -> int:
    try:
        env = open_lmdb(path)
    except InputError as exc:
        raise CheckError(str(exc)) from None
    try:
        n = env.stat()["entries"]
        if n == 0:
            raise CheckError(f"{path}: empty LMDB")
        with env.begin() as txn:
            key, raw = next(iter(txn.cursor()))
            image, _ = from_datum(raw)
        if list(image.shape) != list(shape):
            raise CheckError(f"{path}: first record {key.decode()} has shape "
                             f"{list(image.shape)}, the manifest says {shape}")
        return n
    finally:
        env.close()


def _hdf5_entries(list_file: Path, shape: list[int], label_shape: list[int]) -> int:
    if not list_file.is_file():
        raise CheckError(f"{list_file}: HDF5 list file missing")
    total = 0
    files = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
    if not files:
        raise CheckError(f"{list_file}: names no HDF5 files")
    for name in files:
        if not Path(name).is_file():
            raise CheckError(f"{list_file}: lists {name}, which does not exist (was the "
                             "dataset moved? the list holds absolute paths)")
        try:
            f = h5py.File(name, "r")
        except OSError as exc:
            raise CheckError(f"{name}: not a readable HDF5 file, damaged? ({exc})") from None
        with f:
            for key in ("data", "label"):
                if key not in f:
                    raise CheckError(f"{name}: no dataset '{key}'")
                if f[key].dtype.kind != "f":
                    raise CheckError(f"{name}: '{key}' is {f[key].dtype}, HDF5Data needs floats")
            data, label = f["data"], f["label"]
            if list(data.shape[1:]) != list(shape) or data.shape[0] != label.shape[0] \
                    or list(label.shape[1:]) != list(label_shape):
                raise CheckError(f"{name}: data {data.shape} / label {label.shape} do not "
                                 f"match the manifest ({shape}, label {label_shape})")
            total += data.shape[0]
    return total


def _net_file(db: dict[str, Any], source: Path, batch: int, directory: Path) -> Path:
    net = caffe_pb2().NetParameter()
    layer = net.layer.add()
    layer.name = "data"
    layer.top.extend(["data", "label"])
    if db["format"] == "lmdb":
        layer.type = "Data"
        layer.data_param.source = str(source)
        layer.data_param.backend = caffe_pb2().DataParameter.LMDB
        layer.data_param.batch_size = batch
    else:
        layer.type = "HDF5Data"
        layer.hdf5_data_param.source = str(source)
        layer.hdf5_data_param.batch_size = batch
    path = directory / "read.prototxt"
    path.write_text(str(net))
    return path


def read_through_caffe(db: dict[str, Any], root: Path, *, batch: int = 100,
                       limit: int | None = None, verify: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Every record of a manifest database as Caffe's data layer delivers it, in order:
    (data N x C x H x W float32, label N or N x K). The database's files are verified
    against the manifest's hashes first (`verify`)."""
    source = Path(root) / db["path"]
    if verify:
        verify_database(root, db)
    if db["format"] == "lmdb":
        n = _lmdb_entries(source, db["shape"])
    elif db["format"] == "hdf5":
        n = _hdf5_entries(source, db["shape"], db.get("label_shape", []))
    else:
        raise CheckError(f"{db['path']}: unknown format {db['format']!r}")
    if limit is not None:
        n = min(n, limit)
    batch = max(1, min(batch, n))
    c = caffe()
    c.set_mode_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        net = c.Net(str(_net_file(db, source, batch, Path(tmp))), c.TEST)
        data, labels = [], []
        for _ in range(-(-n // batch)):
            out = net.forward()
            data.append(out["data"].copy())
            labels.append(out["label"].copy())
        del net
    return np.concatenate(data)[:n], np.concatenate(labels)[:n]


def _label_counts(labels: np.ndarray) -> dict[str, int]:
    if labels.ndim == 1:
        counts = Counter(str(int(v)) for v in labels)
    else:
        counts = Counter({str(k): int(v) for k, v in enumerate((labels > 0.5).sum(0)) if v})
    return dict(sorted(counts.items(), key=lambda kv: int(kv[0])))


def _check_database(db: dict[str, Any], root: Path, batch: int, notes: list[str]
                    ) -> DatabaseReport:
    report = DatabaseReport(db["path"])
    try:
        note = verify_database(root, db)
        if note:
            notes.append(note)
        data, labels = read_through_caffe(db, root, batch=batch, verify=False)
    except InputError as exc:
        report.problems.append(str(exc))
        return report
    report.count = len(data)
    report.shape = tuple(data.shape[1:])
    report.label_counts = _label_counts(labels)
    if report.count != db["count"]:
        report.problems.append(f"{report.count} records, manifest says {db['count']}")
    if list(report.shape) != list(db["shape"]):
        report.problems.append(f"shape {list(report.shape)}, manifest says {db['shape']}")
    if report.label_counts != db["label_counts"]:
        report.problems.append(f"label counts {report.label_counts}, manifest says "
                               f"{db['label_counts']}")
    if db.get("mean_file"):
        mean_path = root / db["mean_file"]
        if not mean_path.is_file():
            report.problems.append(f"mean file {db['mean_file']} missing")
        else:
            report.problems.extend(_check_mean(mean_path, db["mean_file"], data))
    if db.get("index_file"):
        path = root / db["index_file"]
        try:
            report.problems.extend(_check_index(path, db, labels))
        except (KeyError, ValueError, csv.Error) as exc:   # UnicodeDecodeError included
            report.problems.append(f"{path.name}: not a readable index ({exc})")
    return report


def _check_mean(path: Path, name: str, data: np.ndarray) -> list[str]:
    try:
        mean = read_binaryproto(path)
    except InputError as exc:
        return [str(exc)]
    if mean.shape != data.shape[1:]:
        return [f"{name} has shape {list(mean.shape)}, the records {list(data.shape[1:])}"]
    if not np.allclose(mean, data.mean(0, dtype=np.float64), atol=1e-3):
        return [f"{name} is not the mean of the records"]
    return []


def _check_index(path: Path, db: dict[str, Any], labels: np.ndarray) -> list[str]:
    if not path.is_file():
        return [f"index file {path.name} missing"]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    problems = []
    if len(rows) != db["count"]:
        problems.append(f"{path.name}: {len(rows)} rows for {db['count']} records")
        return problems
    patients = Counter(r["patient_id"] for r in rows)
    if dict(sorted(patients.items())) != db["patient_counts"]:
        problems.append(f"{path.name}: patients do not match the manifest's patient counts")
    if "label" in rows[0] and labels.ndim == 1:
        bad = [r["rank"] for r, lab in zip(rows, labels, strict=True)
               if r["label"] != "" and int(r["label"]) != int(lab)]
        if bad:
            problems.append(f"{path.name}: rank {bad[0]} label differs from the record's")
    return problems


def _check_folds(root: Path, manifest: dict[str, Any]) -> list[str]:
    if not manifest.get("folds_file"):
        return []
    try:
        folds = read_folds(root / manifest["folds_file"])
    except FoldError as exc:
        return [str(exc)]
    problems = []
    for db in manifest["databases"]:
        fold = db.get("fold")
        if fold is None or not folds.patient_disjoint:
            continue
        in_fold = folds.patients(fold)
        seen = set(db["patient_counts"])
        if db["role"] == "test" and not seen <= in_fold:
            problems.append(f"{db['path']}: test records of patients outside fold {fold}: "
                            f"{sorted(seen - in_fold)[:3]}")
        if db["role"] == "train" and seen & in_fold:
            problems.append(f"{db['path']}: trains on patients of its own test fold {fold}: "
                            f"{sorted(seen & in_fold)[:3]}")
    return problems


def check_dataset(path: Path, *, batch: int = 100) -> CheckReport:
    root = Path(path)
    report = CheckReport(root)
    try:
        manifest = read_manifest(root)
    except ManifestError as exc:
        report.problems.append(str(exc))
        return report
    if not manifest["databases"]:
        report.problems.append("the manifest lists no databases")
    for db in manifest["databases"]:
        report.databases.append(_check_database(db, root, batch, report.notes))
    report.problems.extend(_check_folds(root, manifest))
    return report


def format_report(report: CheckReport) -> str:
    lines = [f"dataset {report.path}"]
    for d in report.databases:
        shape = "x".join(map(str, d.shape)) or "?"
        labels = " ".join(f"{k}:{v}" for k, v in d.label_counts.items())
        status = "OK" if d.ok else "MISMATCH"
        lines.append(f"  {d.path:<36} {d.count:>9} records  {shape:<10} labels {labels:<24} "
                     f"{status}")
        lines.extend(f"      - {p}" for p in d.problems)
    lines.extend(f"  - {p}" for p in report.problems)
    lines.extend(f"  note: {n}" for n in report.notes)
    lines.append("matches its manifest" if report.ok else "DOES NOT match its manifest")
    return "\n".join(lines)
