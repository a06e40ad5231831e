"""The databases of one dataset, written together while its sources stream past.

Each database is planned before writing (its record count, and each record's rank in the
seeded shuffled order), so records can arrive in any order: an LMDB keys them by rank, an
HDF5 set stores them at their rank's row. On close every database is checked complete,
training sets get their mean image, and test sets their index CSV (rank -> candidate,
patient, position ...) for aggregation.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.datasets.hdf5_writer import Hdf5Writer
from medtl.datasets.lmdb_writer import LmdbWriter
from medtl.datasets.manifest import DatabaseRecord, Manifest
from medtl.datasets.mean import MeanAccumulator, write_binaryproto


@dataclass(frozen=True)
class DbSpec:
    name: str                       # path relative to the dataset, e.g. "fold1/train_64_lmdb"
    format: str                     # "lmdb" or "hdf5"
    role: str                       # "train" or "test"
    fold: int | None
    count: int
    shape: tuple[int, int, int]
    dtype: str = "uint8"
    label_shape: tuple[int, ...] = ()
    mean: bool = False
    index_columns: tuple[str, ...] = ()


class DatabaseSet:
    """Writers for the planned databases of a dataset being built in `root` (a temporary
    directory that becomes `final_root`)."""

    def __init__(self, root: Path, final_root: Path, manifest: Manifest) -> None:
        self.root = Path(root)
        self.final_root = Path(final_root)
        self.manifest = manifest
        self._specs: dict[str, DbSpec] = {}
        self._writers: dict[str, Any] = {}
        self._records: dict[str, DatabaseRecord] = {}
        self._means: dict[str, MeanAccumulator] = {}
        self._index: dict[str, dict[int, list[Any]]] = {}
        self.bytes_written = 0

    def add(self, spec: DbSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"database {spec.name} planned twice")
        if spec.count <= 0:
            raise ValueError(f"database {spec.name} would be empty")
        path = self.root / spec.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec.format == "lmdb":
            writer: Any = LmdbWriter(path)
        elif spec.format == "hdf5":
            writer = Hdf5Writer(path, Path(spec.name).name, spec.count, spec.shape,
                                label_shape=spec.label_shape,
                                list_prefix=self.final_root / spec.name)
        else:
            raise ValueError(f"unknown database format {spec.format!r}")
        self._specs[spec.name] = spec
        self._writers[spec.name] = writer
        rel = spec.name if spec.format == "lmdb" else f"{spec.name}/{Path(spec.name).name}.txt"
        self._records[spec.name] = DatabaseRecord(
            path=rel, format=spec.format, role=spec.role, fold=spec.fold,
            shape=list(spec.shape), dtype=spec.dtype, label_shape=list(spec.label_shape))
        if spec.mean:
            self._means[spec.name] = MeanAccumulator(spec.shape)
        if spec.index_columns:
            self._index[spec.name] = {}

    def put(self, name: str, rank: int, image: np.ndarray, label: Any, patient: str,
            index_row: list[Any] | None = None) -> None:
        spec = self._specs[name]
        if image.shape != spec.shape or str(image.dtype) != spec.dtype:
            raise ValueError(f"{name}: record {image.dtype}{image.shape} does not match the "
                             f"planned {spec.dtype}{spec.shape}")
        if not 0 <= rank < spec.count:
            raise ValueError(f"{name}: rank {rank} outside the planned 0..{spec.count - 1}")
        writer = self._writers[name]
        if spec.format == "lmdb":
            if np.ndim(label) != 0:
                raise ValueError(f"{name}: an LMDB Datum holds one integer label, not {label!r}")
            writer.put(rank, image, int(label))
        else:
            writer.put(rank, image, label)
        self.bytes_written += image.nbytes
        self._records[name].add(label if np.ndim(label) == 0 else list(label), patient)
        if name in self._means:
            self._means[name].add(image)
        if name in self._index:
            if index_row is None:
                raise ValueError(f"{name}: an index row is required")
            self._index[name][rank] = index_row

    def close(self) -> list[DatabaseRecord]:
        """Finish every database, check it is complete, write means and indexes."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
        for name, spec in self._specs.items():
            record = self._records[name]
            if record.count != spec.count:
                raise RuntimeError(f"{name}: {record.count} of {spec.count} planned records "
                                   "were written")
            stem = name.removesuffix("_lmdb").removesuffix("_hdf5")
            if name in self._means:
                mean_path = self.root / f"{stem}_mean.binaryproto"
                write_binaryproto(mean_path, self._means[name].mean())
                record.mean_file = str(mean_path.relative_to(self.root))
            if name in self._index:
                rows = self._index[name]
                index_path = self.root / f"{stem}_index.csv"
                with open(index_path, "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["rank", *spec.index_columns])
                    for rank in range(spec.count):
                        w.writerow([rank, *rows[rank]])
                record.index_file = str(index_path.relative_to(self.root))
            self.manifest.databases.append(record)
        return list(self._records.values())

    def abort(self) -> None:
        for writer in self._writers.values():
            with contextlib.suppress(Exception):  # closing what is left after an error
                writer.close()
        self._writers = {}
