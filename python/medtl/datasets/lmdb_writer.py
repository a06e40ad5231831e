"""LMDB of Caffe `Datum`s, the input of Caffe's `Data` layer.

Caffe's `Data` layer reads records in key order, so the keys fix the order of training:
:func:`shuffled_order` gives a seeded permutation and records are keyed by their rank in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import lmdb
import numpy as np

from medtl import io
from medtl.caffe_env import caffe_pb2
from medtl.errors import DiskFullError, InputError, RunError
from medtl.io import atomic_dir

INITIAL_MAP_SIZE = 1 << 26  # grows by doubling when full
KEY_DIGITS = 10
COMMIT_BYTES = 8 << 20  # bounds the records held in memory per open writer


def shuffled_order(n: int, seed: int) -> np.ndarray:
    """A deterministic permutation of range(n) under `seed`."""
    return np.random.default_rng(seed).permutation(n)


def record_key(rank: int) -> bytes:
    return f"{rank:0{KEY_DIGITS}d}".encode()


def to_datum(image: np.ndarray, label: int):
    """A Datum from a C x H x W array: uint8 goes to `data` bytes, floats to `float_data`."""
    if image.ndim != 3:
        raise ValueError(f"expected a C x H x W array, got shape {image.shape}")
    datum = caffe_pb2().Datum()
    datum.channels, datum.height, datum.width = (int(s) for s in image.shape)
    datum.label = int(label)
    if image.dtype == np.uint8:
        datum.data = np.ascontiguousarray(image).tobytes()
    else:
        datum.float_data.extend(np.asarray(image, dtype=np.float32).ravel().tolist())
    return datum


def from_datum(raw: bytes) -> tuple[np.ndarray, int]:
    datum = caffe_pb2().Datum()
    datum.ParseFromString(raw)
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        image = np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    else:
        image = np.asarray(datum.float_data, dtype=np.float32).reshape(shape)
    return image, datum.label


class LmdbWriter:
    """Streams records into a new LMDB at `path`; the map grows by doubling when full.

    Records are keyed by rank (:func:`record_key`), so they may arrive in any order and Caffe
    still reads them in rank order. The caller makes the directory appear atomically (a
    dataset is built in a temporary directory); :func:`write_lmdb` does it for one LMDB.
    """

    def __init__(self, path: Path, *, map_size: int = INITIAL_MAP_SIZE,
                 commit_every: int = 1000, commit_bytes: int = COMMIT_BYTES) -> None:
        self.path = Path(path)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise FileExistsError(f"{self.path} already exists")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(str(self.path), map_size=map_size, subdir=True, lock=False)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc
        self._pending: list[tuple[bytes, bytes]] = []
        self._commit_every = commit_every
        self._commit_bytes = commit_bytes
        self._pending_bytes = 0
        self.count = 0
        self.bytes = 0

    def put(self, rank: int, image: np.ndarray, label: int) -> None:
        value = to_datum(image, label).SerializeToString()
        self.put_raw(record_key(rank), value)

    def put_raw(self, key: bytes, value: bytes) -> None:
        self._pending.append((key, value))
        self.count += 1
        self.bytes += len(value)
        self._pending_bytes += len(value)
        if (len(self._pending) >= self._commit_every
                or self._pending_bytes >= self._commit_bytes):
            self.flush()

    def flush(self) -> None:
        if self._pending:
            try:
                _commit(self._env, self._pending)
            except lmdb.Error as exc:
                raise self._failed(exc) from exc
            self._pending = []
            self._pending_bytes = 0

    def close(self) -> None:
        try:
            self.flush()
            try:
                self._env.sync()
            except lmdb.Error as exc:
                raise self._failed(exc) from exc
        finally:
            self._env.close()

    def _failed(self, exc: lmdb.Error) -> RunError:
        """A failed LMDB write as one line naming the database; a full disk (which LMDB
        reports as an I/O error) as DiskFullError."""
        reason = io.no_space(exc, self.path)
        if reason is not None:
            return DiskFullError(f"{reason} at {self.path}: free space there and run the "
                                 "command again")
        return RunError(f"{self.path}: LMDB write failed ({exc})")

    def __enter__(self) -> LmdbWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_lmdb(dest: Path, records: Iterable[tuple[int, np.ndarray, int]],
               *, commit_every: int = 1000) -> int:
    """Write (rank, image, label) records to a new LMDB at `dest`; returns the count.

    The LMDB is written in a temporary directory and renamed into place when complete.
    """
    with atomic_dir(Path(dest)) as tmp:
        with LmdbWriter(tmp, commit_every=commit_every) as writer:
            for rank, image, label in records:
                writer.put(rank, image, label)
        return writer.count


def _commit(env: lmdb.Environment, items: list[tuple[bytes, bytes]]) -> None:
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    if not txn.put(key, value, overwrite=False):
                        raise ValueError(f"duplicate LMDB key {key.decode()}")
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def open_lmdb(path: Path) -> lmdb.Environment:
    """The LMDB at `path`, read-only, checked before any record is read: a folder without
    data.mdb, a file that is no LMDB, or a truncated one is an InputError naming it (reading
    past the end of a truncated data.mdb kills the process with SIGBUS)."""
    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise InputError(f"{path}: not an LMDB (no data.mdb)")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False)
    except lmdb.Error as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise InputError(f"{path}: not a readable LMDB, damaged? ({reason})") from None
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = data.stat().st_size
    if size < need:
        env.close()
        raise InputError(f"{path}: damaged LMDB: data.mdb is truncated ({size} bytes, its "
                         f"pages need {need})")
    return env


def read_lmdb(path: Path) -> Iterable[tuple[bytes, np.ndarray, int]]:
    """Yield (key, image, label) in key order, the order Caffe's Data layer reads."""
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            for key, raw in txn.cursor():
                image, label = from_datum(raw)
                yield key, image, label
    finally:
        env.close()
