"""`manifest.json`, written beside every dataset: what made it and what it holds.

It records the generator (medtl version, module), the seed, the source files with their
hashes, the resolved configuration, the protocol values with provenance, and per database
its format, count, sample shape, dtype, counts per class / patient / fold, and the size and
sha256 of its files (`files`, taken once the dataset is complete; `medtl.datasets.integrity`
verifies them before Caffe opens the database). `medtl data check` compares all of this with
what Caffe reads back.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import medtl
from medtl import io
from medtl.errors import InputError
from medtl.io import sha256_file

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def _git_describe() -> str | None:
    repo = Path(medtl.__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class DatabaseRecord:
    """One LMDB or HDF5 list the dataset holds, as counted while writing."""

    path: str                       # relative to the dataset directory
    format: str                     # "lmdb" or "hdf5"
    role: str                       # "train" / "test"
    fold: int | None
    shape: list[int]                # C, H, W
    dtype: str
    label_shape: list[int] = field(default_factory=list)  # [] scalar, [K] multi-hot
    count: int = 0
    label_counts: Counter = field(default_factory=Counter)
    patient_counts: Counter = field(default_factory=Counter)
    mean_file: str | None = None
    index_file: str | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # content_hashes()

    def add(self, label: Any, patient: str) -> None:
        self.count += 1
        self.patient_counts[patient] += 1
        if isinstance(label, (list, tuple)):
            for k, v in enumerate(label):
                if v:
                    self.label_counts[str(k)] += 1
        else:
            self.label_counts[str(int(label))] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "role": self.role, "fold": self.fold,
                "shape": self.shape, "dtype": self.dtype, "label_shape": self.label_shape,
                "count": self.count,
                "label_counts": dict(sorted(self.label_counts.items(), key=lambda kv: int(kv[0]))),
                "patient_counts": dict(sorted(self.patient_counts.items())),
                "mean_file": self.mean_file, "index_file": self.index_file,
                "files": self.files}


@dataclass
class Manifest:
    dataset: str
    generator_module: str
    seed: int
    config: dict[str, Any]
    protocol: dict[str, Any]
    classes: list[str]
    sources: list[dict[str, Any]] = field(default_factory=list)
    databases: list[DatabaseRecord] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)
    folds_file: str | None = None

    def add_source(self, path: Path, root: Path, *, sha256: str | None = None,
                   kind: str = "file", files: int = 1) -> None:
        try:
            rel = str(Path(path).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            rel = str(path)
        self.sources.append({"path": rel, "kind": kind, "files": files,
                             "sha256": sha256 or sha256_file(Path(path))})

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "medtl-dataset",
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "generator": {"name": "medtl", "version": medtl.__version__,
                          "module": self.generator_module, "git": _git_describe()},
            "seed": self.seed,
            "classes": self.classes,
            "config": self.config,
            "protocol": self.protocol,
            "counts": self.counts,
            "skipped": dict(sorted(self.skipped.items())),
            "folds_file": self.folds_file,
            "databases": [d.to_dict() for d in self.databases],
            "sources": self.sources,
            "notes": self.notes,
        }

    def write(self, directory: Path) -> Path:
        """manifest.json in `directory`, with the content hashes of every database (written
        last: the databases are complete by now)."""
        for db in self.databases:
            db.files = content_hashes(directory, db.to_dict())
        return io.write_text(Path(directory) / MANIFEST,
                             json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")


def database_files(root: Path, db: Mapping[str, Any]) -> list[Path]:
    """The files a manifest database consists of: an LMDB's data.mdb; an HDF5 list and the
    files it names (by their final absolute paths: they lie beside the list); and the mean
    image Caffe subtracts, if any."""
    source = Path(root) / db["path"]
    mean = [Path(root) / db["mean_file"]] if db.get("mean_file") else []
    if db["format"] == "lmdb":
        return [source / "data.mdb", *mean]
    names = [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
    return [source, *(source.parent / Path(name).name for name in names), *mean]


def content_hashes(root: Path, db: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{file relative to `root`: {"bytes", "sha256"}} of a complete database."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size,
                                             "sha256": sha256_file(p)}
            for p in database_files(root, db)}


class ManifestError(InputError):
    """A manifest that is missing or not one medtl wrote."""


DATABASE_KEYS = ("path", "format", "role", "shape", "count", "label_counts")


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (is {directory} a medtl dataset?)")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:   # JSONDecodeError and UnicodeDecodeError
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "medtl-dataset":
        raise ManifestError(f"{path}: not a medtl dataset manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {data.get('format_version')} "
                            f"(this medtl reads {FORMAT_VERSION})")
    _check_databases(path, data.get("databases"))
    return data


def _check_databases(path: Path, databases: Any) -> None:
    if not isinstance(databases, list):
        raise ManifestError(f"{path}: 'databases' is missing or not a list")
    for i, db in enumerate(databases):
        missing = [k for k in DATABASE_KEYS if not isinstance(db, dict) or k not in db]
        if missing:
            raise ManifestError(f"{path}: databases[{i}] lacks {', '.join(missing)}")
        if db["format"] not in ("lmdb", "hdf5"):
            raise ManifestError(f"{path}: databases[{i}]: unknown format {db['format']!r}")
