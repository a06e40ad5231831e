"""LMDB of Caffe `Datum`s, the input of Caffe's `Data` layer.

Caffe's `Data` layer reads records in key order, so the keys fix the order of training:
:func:`shuffled_order` gives a seeded permutation and records are keyed by their rank in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import lmdb
import numpy as np

from medtl.caffe_env import caffe_pb2
from medtl.data.atomic import atomic_dir

INITIAL_MAP_SIZE = 1 << 26  # grows by doubling when full
KEY_DIGITS = 10


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


def write_lmdb(dest: Path, records: Iterable[tuple[int, np.ndarray, int]],
               *, commit_every: int = 1000) -> int:
    """Write (rank, image, label) records to a new LMDB at `dest`; returns the count.

    The LMDB is written in a temporary directory and renamed into place when complete.
    """
    count = 0
    with atomic_dir(Path(dest)) as tmp:
        env = lmdb.open(str(tmp), map_size=INITIAL_MAP_SIZE, subdir=True, lock=False)
        try:
            pending: list[tuple[bytes, bytes]] = []
            for rank, image, label in records:
                pending.append((record_key(rank), to_datum(image, label).SerializeToString()))
                count += 1
                if len(pending) >= commit_every:
                    _commit(env, pending)
                    pending = []
            _commit(env, pending)
        finally:
            env.close()
    return count


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


def read_lmdb(path: Path) -> Iterable[tuple[bytes, np.ndarray, int]]:
    """Yield (key, image, label) in key order, the order Caffe's Data layer reads."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for key, raw in txn.cursor():
                image, label = from_datum(raw)
                yield key, image, label
    finally:
        env.close()
