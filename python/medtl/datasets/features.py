"""Deep features (e.g. CaffeNet fc7, Ravishankar 2016) of every record of a dataset, from any
deploy prototxt and caffemodel, into HDF5 or NumPy.

Records are read in the order Caffe's data layers read them (LMDB key order, or the HDF5
list's order) and fed to `medtl.infer.ArrayNet`, the kit's one inference path, which
preprocesses them as Caffe's TEST-phase `transform_param` would: the centre crop of the net's
input size, the mean image (cropped alike) or per-channel mean values subtracted, then
`scale`. HDF5-list records are taken as already preprocessed (centre crop only).

Output (`.h5`): `features` (N x D float32, the blob flattened per record), `label` (N, or
N x K), `key` (the record keys); attributes name the net, the weights (sha256), the blob and
the source. `.npz` holds the same arrays. Written to a temporary file and renamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import h5py
import numpy as np

from medtl import io
from medtl.datasets.lmdb_writer import open_lmdb, read_lmdb
from medtl.datasets.manifest import sha256_file
from medtl.infer import ArrayNet, InferenceError
from medtl.progress import bar

# Feature extraction is inference: its errors are the inference module's.
FeatureError = InferenceError


def _records(source: Path) -> tuple[int, Iterator[tuple[bytes, np.ndarray, np.ndarray]], bool]:
    """(count, iterator of (key, C x H x W, label), preprocessed?) of an LMDB or HDF5 list."""
    source = Path(source)
    if not source.exists():
        raise FeatureError(f"{source} does not exist (the source is an LMDB directory or an "
                           "HDF5 list)")
    if source.is_dir():
        env = open_lmdb(source)
        n = env.stat()["entries"]
        env.close()
        return n, ((k, im, np.asarray(lab)) for k, im, lab in read_lmdb(source)), False
    if source.suffix == ".txt" and source.is_file():
        files = _hdf5_list(source)
        if not files:
            raise FeatureError(f"{source}: names no HDF5 files")
        for name in files:
            if not Path(name).is_file():
                raise FeatureError(f"{source}: lists {name}, which does not exist")
        n = sum(_hdf5_rows(name) for name in files)

        def rows():
            for name in files:
                with h5py.File(name, "r") as f:
                    for i in range(f["data"].shape[0]):
                        yield f"{Path(name).name}:{i}".encode(), f["data"][i], f["label"][i]

        return n, rows(), True
    raise FeatureError(f"{source}: expected an LMDB directory or an HDF5 list (.txt)")


def _hdf5_list(source: Path) -> list[str]:
    try:
        return [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise FeatureError(f"{source}: not an HDF5 list (a text file of .h5 paths)") from None


def _hdf5_rows(name: str) -> int:
    try:
        with h5py.File(name, "r") as f:
            return f["data"].shape[0]
    except (OSError, KeyError) as exc:   # not HDF5, damaged, or no 'data'
        raise FeatureError(f"{name}: not an HDF5 file with a 'data' set ({exc})") from None


def extract(deploy: Path, weights: Path, source: Path, out: Path, *, blob: str = "fc7",
            mean_file: Path | None = None, mean_value: tuple[float, ...] | None = None,
            scale: float = 1.0, batch: int = 50, gpu: int | None = None,
            progress: bool = True) -> Path:
    """Features of blob `blob` for every record of `source` into `out` (.h5 or .npz),
    computed by `medtl.infer.ArrayNet` (Caffe's TEST-phase transform)."""
    deploy, weights, source, out = map(Path, (deploy, weights, source, out))
    if out.suffix not in (".h5", ".hdf5", ".npz"):
        raise FeatureError(f"{out}: the output must end in .h5, .hdf5 or .npz")
    if out.exists():
        raise FeatureError(f"{out} already exists")
    if batch < 1:
        raise FeatureError("batch must be at least 1")
    n, rows, preprocessed = _records(source)
    if n == 0:
        raise FeatureError(f"{source}: no records")
    if preprocessed and (mean_file is not None or mean_value or scale != 1.0):
        raise FeatureError(f"{source}: HDF5 records are stored preprocessed; give no mean "
                           "or scale")
    net = ArrayNet(deploy, weights, mean_file=mean_file, mean_value=tuple(mean_value or ()),
                   scale=scale, gpu=gpu)
    net.layer_of(blob)
    first = next(rows, None)
    if first is None:
        raise FeatureError(f"{source}: read 0 records, expected {n}")
    _check_record(net, source, first[0], first[1])
    feats, labels, keys = _forward(net, chain([first], rows), n, source, blob, batch,
                                   progress, preprocessed=preprocessed)
    attrs = {"deploy": str(deploy.resolve()), "weights": str(weights.resolve()),
             "weights_sha256": sha256_file(weights), "blob": blob, "source": str(source),
             "mean_file": str(mean_file or ""), "scale": float(scale)}
    return _save(out, feats, labels, keys, attrs)


def _check_record(net: ArrayNet, source: Path, key: bytes, image: np.ndarray) -> None:
    shape = (net.channels, net.height, net.width)
    if image.shape[0] != shape[0] or image.shape[1] < shape[1] or image.shape[2] < shape[2]:
        raise FeatureError(f"{source}: record {key.decode()} of shape {tuple(image.shape)} "
                           f"cannot feed the net's input {shape}")


def _forward(net: ArrayNet, rows: Iterator[tuple[bytes, np.ndarray, np.ndarray]], n: int,
             source: Path, blob: str, batch: int, progress: bool, *, preprocessed: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features N x D, labels, keys) of the records, `batch` at a time."""
    feats = np.empty((n, int(np.prod(net.net.blobs[blob].data.shape[1:]))), np.float32)
    keys: list[bytes] = []
    labels: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    done = 0
    pbar = bar(n, f"{blob} features", enabled=progress, unit="record")
    try:
        for key, image, label in rows:
            _check_record(net, source, key, image)
            pending.append(np.asarray(image))
            keys.append(key)
            labels.append(np.asarray(label, np.float32))
            if len(pending) == batch or len(keys) == n:
                feats[done:done + len(pending)] = net(np.stack(pending), blob,
                                                      batch=len(pending),
                                                      preprocessed=preprocessed)
                done += len(pending)
                pbar.update(len(pending))
                pending = []
        if done != n:
            raise FeatureError(f"{source}: read {done} records, expected {n}")
    finally:
        pbar.close()
    return feats, np.stack(labels), np.array(keys)


def _save(out: Path, feats: np.ndarray, labels: np.ndarray, keys: np.ndarray,
          attrs: dict) -> Path:
    with io.atomic_path(out) as tmp:
        if out.suffix == ".npz":
            np.savez(tmp, features=feats, label=labels, key=keys,
                     attrs=np.array([f"{k}={v}" for k, v in attrs.items()]))
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("features", data=feats)
                f.create_dataset("label", data=labels)
                f.create_dataset("key", data=keys)
                for k, v in attrs.items():
                    f.attrs[k] = v
    return out
