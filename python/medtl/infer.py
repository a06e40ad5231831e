"""Inference with a trained net, preprocessed exactly as Caffe's TEST phase does.

Two ways in, one preprocessing:

- :func:`predict_database`: the fold's test database (LMDB through a `Data` layer with the
  training set's mean image and the centre crop, or an HDF5 list through `HDF5Data`) read
  by a TEST-phase net, every record once, in the database's order;
- :class:`ArrayNet`: a deploy net fed from arrays (patches cut at test time, records read by
  the kit), with the same TEST-phase transform in NumPy: the mean image (or per-channel
  values) subtracted, the centre crop of the net's input, then `scale`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from medtl import caffe_env
from medtl.datasets.mean import read_binaryproto
from medtl.errors import InputError
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, val_net
from medtl.protocols import Configuration
from medtl.prototxt import write_text
from medtl.surgery import SurgeryError, check_weights_fit


class InferenceError(InputError):
    """A net, weights file or input Caffe would abort on; the message names it."""


def test_net(cfg: Configuration, fold, path: Path) -> tuple[Path, int]:
    """The TEST-phase net over the fold's test set at `path`; returns (path, batch)."""
    model = get_model(cfg.model)
    batch = max(1, min(cfg.solver.val_batch_size.value, fold.test_size))
    if fold.backend == "hdf5":
        data = DataSpec(fold.test, batch, backend="hdf5")
    elif getattr(fold, "mean_value", ()):     # 8-bit records at the input size
        data = DataSpec(fold.test, batch, mean_value=tuple(fold.mean_value), scale=fold.scale)
    else:
        crop = model.crop_size if model.image_size > model.crop_size else 0
        data = DataSpec(fold.test, batch, crop_size=crop, mean_file=fold.mean_file)
    net = val_net(model.body, cfg.num_classes.value, data, cfg.label or cfg.id, cfg.loss)
    return write_text(path, net), batch


def predict_database(cfg: Configuration, fold, weights: Path, net_path: Path, *,
                     gpu: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(outputs N x K, labels N x ...) of every test record, in the database's order.

    The data layers read from the first record and wrap round after the last, so the
    outputs of the last, partly wrapped batch are cut at N."""
    path, batch = test_net(cfg, fold, net_path)
    c = caffe_env.caffe()
    caffe_env.set_mode(gpu)
    net = c.Net(str(path), c.TEST, weights=str(weights))
    probs, labels = [], []
    for _ in range(math.ceil(fold.test_size / batch)):
        net.forward()
        probs.append(np.array(net.blobs["prob"].data, copy=True).reshape(batch, -1))
        labels.append(np.array(net.blobs["label"].data, copy=True).reshape(batch, -1))
    n = fold.test_size
    return np.concatenate(probs)[:n], np.concatenate(labels)[:n]


class ArrayNet:
    """A deploy net (an Input layer) applied to arrays with Caffe's TEST-phase transform."""

    def __init__(self, deploy: Path, weights: Path, *, mean_file: Path | str | None = None,
                 mean_value: tuple[float, ...] = (), scale: float = 1.0,
                 gpu: int | None = None) -> None:
        if mean_file is not None and mean_value:
            raise InferenceError("give a mean file or mean values, not both")
        self.deploy, weights = Path(deploy), Path(weights)
        self.net = _loaded(self.deploy, weights, gpu)
        self.input = self.net.inputs[0]
        _, self.channels, self.height, self.width = self.net.blobs[self.input].data.shape
        self.mean: np.ndarray | float = 0.0
        if mean_file is not None:
            self.mean = read_binaryproto(Path(mean_file)).astype(np.float32)
        elif mean_value:
            if len(mean_value) not in (1, self.channels):
                raise InferenceError(f"{len(mean_value)} mean values for {self.channels} "
                                     "channels")
            self.mean = np.asarray(mean_value, np.float32).reshape(-1, 1, 1)
        self.scale = np.float32(scale)

    def layer_of(self, blob: str) -> str:
        """The last layer writing `blob` (so in-place layers such as fc7's ReLU apply)."""
        if blob not in self.net.blobs:
            raise InferenceError(f"{self.deploy}: no blob {blob!r} (blobs: "
                                 f"{', '.join(self.net.blobs)})")
        return [name for name, tops in self.net.top_names.items() if blob in tops][-1]

    def transform(self, images: np.ndarray) -> np.ndarray:
        """n x C x H x W records -> the net's input: mean off, centre crop, scale."""
        x = np.asarray(images, np.float32)
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] < self.height \
                or x.shape[3] < self.width:
            raise InferenceError(f"records of shape {tuple(x.shape[1:])} cannot feed the net's "
                                 f"input {(self.channels, self.height, self.width)}")
        if isinstance(self.mean, np.ndarray) and self.mean.shape[1:] != (1, 1) \
                and self.mean.shape != x.shape[1:]:
            raise InferenceError(f"mean image of shape {self.mean.shape}, records are "
                                 f"{tuple(x.shape[1:])}")
        return self._crop(x - self.mean) * self.scale

    def __call__(self, images: np.ndarray, blob: str = "prob", *, batch: int = 50,
                 preprocessed: bool = False, flat: bool = True) -> np.ndarray:
        """n x D activations of `blob` (flattened per record) for n records; with `flat`
        False in the blob's own shape (n x C x H x W for a feature map such as pool5)."""
        end = self.layer_of(blob)
        out = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            x = self._crop(np.asarray(chunk, np.float32)) if preprocessed \
                else self.transform(chunk)
            data = self.net.blobs[self.input]
            if data.data.shape != x.shape:
                data.reshape(*x.shape)
                self.net.reshape()
            data.data[...] = x
            self.net.forward(end=end)
            act = np.array(self.net.blobs[blob].data, copy=True)
            out.append(act.reshape(len(x), -1) if flat else act)
        return np.concatenate(out) if out else np.empty((0, 0), np.float32)

    def _crop(self, x: np.ndarray) -> np.ndarray:
        top = (x.shape[2] - self.height) // 2
        left = (x.shape[3] - self.width) // 2
        return x[:, :, top:top + self.height, left:left + self.width]


def _loaded(deploy: Path, weights: Path, gpu: int | None):
    """The TEST-phase net of `deploy` with `weights`, each checked first where Caffe would
    abort the process instead of raising."""
    for path in (deploy, weights):
        if not path.is_file():
            raise InferenceError(f"{path} does not exist")
    try:
        text_format.Merge(deploy.read_text(), caffe_env.caffe_pb2().NetParameter())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise InferenceError(f"{deploy}: not a net prototxt ({exc})") from None
    c = caffe_env.caffe()
    caffe_env.set_mode(gpu)
    net = c.Net(str(deploy), c.TEST)
    if not net.inputs:
        raise InferenceError(f"{deploy}: a deploy net needs an Input layer (or input: fields)")
    try:
        check_weights_fit(net, weights, deploy, require_all=True)
    except SurgeryError as exc:
        raise InferenceError(str(exc)) from None
    net.copy_from(str(weights))
    return net
