"""HDF5 files for Caffe's `HDF5Data` layer, and the list file the layer's `source` names.

Each file holds float32 `data` (N x C x H x W) and `label` (N, or N x K for multi-hot labels),
the top names of the layer. Caffe loads one whole file into a blob at a time and a blob holds
at most INT_MAX (2^31 - 1) values, so a set is split into files of at most
`max_file_bytes` (1 GiB by default, 2^28 floats). Records go in by rank, as in the LMDBs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import h5py
import numpy as np

from medtl import io
from medtl.errors import DiskFullError

MAX_FILE_BYTES = 1 << 30
# HDF5 reports a failed write (a full disk) only when it flushes: flush this often
FLUSH_BYTES = 64 << 20
CAFFE_MAX_BLOB = 2**31 - 1


class Hdf5Writer:
    """`count` records of `shape` into `<directory>/<name>_NNN.h5` plus `<name>.txt`.

    `list_prefix` is the directory the list file names the .h5 files under: Caffe opens them
    exactly as written, so it should be the dataset's final absolute location.
    """

    def __init__(self, directory: Path, name: str, count: int, shape: tuple[int, ...],
                 *, label_shape: tuple[int, ...] = (), list_prefix: Path | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        if count <= 0:
            raise ValueError(f"{name}: an HDF5 set needs at least one record")
        self.directory = Path(directory)
        self.name = name
        self.count = count
        self.shape = tuple(int(s) for s in shape)
        self.label_shape = tuple(int(s) for s in label_shape)
        per_record = int(np.prod(self.shape))
        if per_record > CAFFE_MAX_BLOB:
            raise ValueError(f"{name}: one record of shape {self.shape} exceeds Caffe's blob "
                             "size limit")
        self.per_file = max(1, min(max_file_bytes // (4 * per_record),
                                   CAFFE_MAX_BLOB // per_record))
        n_files = -(-count // self.per_file)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self._handles: list[h5py.File] = []
        # (data, label) of each file, held open until the files are flushed: a dataset
        # released earlier flushes on release, where HDF5's errors are only printed
        self._sets: list[tuple[h5py.Dataset, h5py.Dataset]] = []
        self._unflushed = 0
        self.list_file = self.directory / f"{name}.txt"
        with self._writing(self.directory):
            for i in range(n_files):
                rows = min(self.per_file, count - i * self.per_file)
                path = self.directory / f"{name}_{i:03d}.h5"
                f = h5py.File(path, "w")
                self._handles.append(f)
                self._sets.append((
                    f.create_dataset("data", (rows, *self.shape), dtype=np.float32,
                                     chunks=(1, *self.shape)),
                    f.create_dataset("label", (rows, *self.label_shape), dtype=np.float32)))
                self.files.append(path)
            prefix = Path(list_prefix) if list_prefix is not None else self.directory
            self.list_file.write_text("".join(f"{prefix / p.name}\n" for p in self.files))
        self.written = 0

    def put(self, rank: int, image: np.ndarray, label) -> None:
        if not 0 <= rank < self.count:
            raise IndexError(f"{self.name}: rank {rank} outside 0..{self.count - 1}")
        if tuple(image.shape) != self.shape:
            raise ValueError(f"{self.name}: record shape {image.shape} != {self.shape}")
        data, labels = self._sets[rank // self.per_file]
        row = rank % self.per_file
        with self._writing(self.files[rank // self.per_file]):
            data[row] = image.astype(np.float32)
            labels[row] = np.asarray(label, dtype=np.float32)
        self.written += 1
        self._unflushed += image.size * 4
        if self._unflushed >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        for path, f in zip(self.files, self._handles, strict=True):
            if f.id.valid:
                with self._writing(path):
                    f.flush()
        self._unflushed = 0

    def close(self) -> None:
        self._flush()
        self._sets = []
        for path, f in zip(self.files, self._handles, strict=False):
            with self._writing(path):
                f.close()
        if self.written != self.count:
            raise ValueError(f"{self.name}: {self.written} of {self.count} planned records "
                             "were written")

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """On a failed write, let go of every file (they are incomplete) and report a full
        disk as DiskFullError naming `path`."""
        try:
            yield
        except Exception as exc:
            self.abandon()
            reason = io.no_space(exc, path)
            if reason is not None:
                raise DiskFullError(f"{reason} at {path}: free space there and run the "
                                    "command again") from exc
            raise

    def abandon(self) -> None:
        """Close every file without writing what HDF5 still holds for it.

        After a failed write HDF5 keeps the file open with unwritten data and tries again
        when the process exits, where a second failure crashes the interpreter (SIGSEGV).
        The file is incomplete anyway (its temporary folder is removed), so what HDF5 still
        holds is written to /dev/null instead."""
        open_files = [f for f in self._handles if f.id.valid]
        for f in open_files:
            with suppress(Exception):
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, f.id.get_vfd_handle())
                os.close(null)
        self._sets = []
        for f in open_files:
            with suppress(Exception):
                f.close()


def read_hdf5_list(list_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """All `data` and `label` rows of the files a list names, concatenated in list order."""
    data, labels = [], []
    for line in Path(list_file).read_text().splitlines():
        if line.strip():
            with h5py.File(line.strip(), "r") as f:
                data.append(f["data"][...])
                labels.append(f["label"][...])
    return np.concatenate(data), np.concatenate(labels)
