"""Deep features (e.g. CaffeNet fc7, Ravishankar 2016) of every record of a dataset, from any
deploy prototxt and caffemodel, into HDF5 or NumPy.

Records are read in the order Caffe's data layers read them (LMDB key order, or the HDF5
list's order) and preprocessed as Caffe's TEST-phase `transform_param` would: the centre
crop of the net's input size, the mean image (cropped alike) or per-channel mean values
subtracted, then `scale`. HDF5-list records are taken as already preprocessed.

Output (`.h5`): `features` (N x D float32, the blob flattened per record), `label` (N, or
N x K), `key` (the record keys); attributes name the net, the weights (sha256), the blob and
the source. `.npz` holds the same arrays. Written to a temporary file and renamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import lmdb
import numpy as np
from google.protobuf import text_format

from medtl import io
from medtl.caffe_env import caffe, caffe_pb2, set_mode
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.datasets.manifest import sha256_file
from medtl.datasets.mean import read_binaryproto
from medtl.errors import InputError
from medtl.progress import bar


class FeatureError(InputError):
    """Inputs Caffe would abort on, or that cannot be combined; the message names them."""


def _records(source: Path) -> tuple[int, Iterator[tuple[bytes, np.ndarray, np.ndarray]], bool]:
    """(count, iterator of (key, C x H x W, label), preprocessed?) of an LMDB or HDF5 list."""
    source = Path(source)
    if source.is_dir():
        if not (source / "data.mdb").is_file():
            raise FeatureError(f"{source}: not an LMDB (no data.mdb)")
        env = lmdb.open(str(source), readonly=True, lock=False)
        n = env.stat()["entries"]
        env.close()
        return n, ((k, im, np.asarray(lab)) for k, im, lab in read_lmdb(source)), False
    if source.suffix == ".txt":
        files = [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
        if not files:
            raise FeatureError(f"{source}: names no HDF5 files")
        for name in files:
            if not Path(name).is_file():
                raise FeatureError(f"{source}: lists {name}, which does not exist")
        n = 0
        for name in files:
            with h5py.File(name, "r") as f:
                n += f["data"].shape[0]

        def rows():
            for name in files:
                with h5py.File(name, "r") as f:
                    for i in range(f["data"].shape[0]):
                        yield f"{Path(name).name}:{i}".encode(), f["data"][i], f["label"][i]

        return n, rows(), True
    raise FeatureError(f"{source}: expected an LMDB directory or an HDF5 list (.txt)")


def _check_weights(net, weights: Path, deploy: Path) -> None:
    """Every learnable layer of the net has weights of the same shape in the file (Caffe
    CHECK-fails, aborting the process, on a shape mismatch; a missing layer would leave
    random weights and meaningless features)."""
    from medtl.surgery import read_weights

    stored = read_weights(weights)
    for name, blobs in net.params.items():
        if name not in stored:
            raise FeatureError(f"{weights} has no weights for layer {name!r} of {deploy}")
        want = [tuple(b.data.shape) for b in blobs]
        got = [tuple(a.shape) for a in stored[name]]
        if len(want) != len(got) or any(
                w != g and (len(g) != 4 or (1,) * (4 - len(w)) + w != g)
                for w, g in zip(want, got, strict=False)):
            raise FeatureError(f"{weights} does not fit {deploy} at layer {name!r}: "
                               f"file {got}, net {want}")


def _mean_array(mean_file: Path | None, mean_value: tuple[float, ...] | None,
                shape: tuple[int, int, int]) -> np.ndarray | float:
    if mean_file is not None and mean_value:
        raise FeatureError("give a mean file or mean values, not both")
    if mean_file is not None:
        mean = read_binaryproto(Path(mean_file))
        if mean.shape != shape:
            raise FeatureError(f"{mean_file}: mean of shape {mean.shape}, records are {shape}")
        return mean
    if mean_value:
        if len(mean_value) not in (1, shape[0]):
            raise FeatureError(f"{len(mean_value)} mean values for {shape[0]} channels")
        return np.asarray(mean_value, np.float32).reshape(-1, 1, 1)
    return 0.0


def _crop(image: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (image.shape[1] - h) // 2, (image.shape[2] - w) // 2
    return image[:, top:top + h, left:left + w]


def extract(deploy: Path, weights: Path, source: Path, out: Path, *, blob: str = "fc7",
            mean_file: Path | None = None, mean_value: tuple[float, ...] | None = None,
            scale: float = 1.0, batch: int = 50, gpu: int | None = None,
            progress: bool = True) -> Path:
    """Features of blob `blob` for every record of `source` into `out` (.h5 or .npz)."""
    deploy, weights, source, out = map(Path, (deploy, weights, source, out))
    for path in (deploy, weights):
        if not path.is_file():
            raise FeatureError(f"{path} does not exist")
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
    param = caffe_pb2().NetParameter()
    try:
        text_format.Merge(deploy.read_text(), param)
    except text_format.ParseError as exc:
        raise FeatureError(f"{deploy}: not a net prototxt ({exc})") from None
    c = caffe()
    set_mode(gpu)
    net = c.Net(str(deploy), c.TEST)
    if not net.inputs:
        raise FeatureError(f"{deploy}: a deploy net needs an Input layer (or input: fields)")
    if blob not in net.blobs:
        raise FeatureError(f"{deploy}: no blob {blob!r} (blobs: {', '.join(net.blobs)})")
    _check_weights(net, weights, deploy)
    net.copy_from(str(weights))
    data = net.inputs[0]
    _, ch, ih, iw = net.blobs[data].data.shape
    dim = int(np.prod(net.blobs[blob].data.shape[1:]))
    feats = np.empty((n, dim), dtype=np.float32)
    keys: list[bytes] = []
    labels: list[np.ndarray] = []
    mean = None
    pbar = bar(n, f"{blob} features", enabled=progress, unit="record")
    try:
        pending: list[np.ndarray] = []
        done = 0
        for key, image, label in rows:
            if image.shape[0] != ch or image.shape[1] < ih or image.shape[2] < iw:
                raise FeatureError(f"{source}: record {key.decode()} of shape "
                                   f"{tuple(image.shape)} cannot feed the net's input "
                                   f"{(ch, ih, iw)}")
            if preprocessed:
                x = _crop(np.asarray(image, np.float32), ih, iw)
            else:
                if mean is None:
                    mean = _mean_array(mean_file, mean_value, tuple(image.shape))
                x = _crop((image.astype(np.float32) - mean) * np.float32(scale), ih, iw)
            pending.append(x)
            keys.append(key)
            labels.append(np.asarray(label, np.float32))
            if len(pending) == batch or len(keys) == n:
                net.blobs[data].reshape(len(pending), ch, ih, iw)
                net.blobs[data].data[...] = np.stack(pending)
                net.forward(end=_last_layer_of(net, blob))
                feats[done:done + len(pending)] = net.blobs[blob].data.reshape(
                    len(pending), -1)
                done += len(pending)
                pbar.update(len(pending))
                pending = []
        if done != n:
            raise FeatureError(f"{source}: read {done} records, expected {n}")
    finally:
        pbar.close()
    attrs = {"deploy": str(deploy.resolve()), "weights": str(weights.resolve()),
             "weights_sha256": sha256_file(weights), "blob": blob, "source": str(source),
             "mean_file": str(mean_file or ""), "scale": float(scale)}
    return _save(out, feats, np.stack(labels), np.array(keys), attrs)


def _last_layer_of(net, blob: str) -> str:
    """The last layer writing `blob` (forward stops there, so in-place layers such as
    fc7's ReLU are applied: fc7 features are post-ReLU, as DeCAF and the BVLC examples take
    them)."""
    last = None
    for name, tops in net.top_names.items():
        if blob in tops:
            last = name
    if last is None:
        raise FeatureError(f"no layer produces blob {blob!r}")
    return last


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
