"""Mean image of a training set as a Caffe `.binaryproto` (a BlobProto), for `mean_file`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from medtl import io
from medtl.caffe_env import caffe_pb2
from medtl.errors import InputError


class MeanAccumulator:
    """Running per-pixel mean of C x H x W images (float64 sums)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.sum = np.zeros(shape, dtype=np.float64)
        self.count = 0

    def add(self, image: np.ndarray) -> None:
        self.sum += image
        self.count += 1

    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("mean of an empty set")
        return (self.sum / self.count).astype(np.float32)


def write_binaryproto(path: Path, mean: np.ndarray) -> Path:
    """A 1 x C x H x W BlobProto with the legacy num/channels/height/width fields that
    Caffe's `compute_image_mean` writes and `DataTransformer` reads."""
    if mean.ndim != 3:
        raise ValueError(f"expected a C x H x W mean, got shape {mean.shape}")
    blob = caffe_pb2().BlobProto()
    blob.num = 1
    blob.channels, blob.height, blob.width = (int(s) for s in mean.shape)
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    return io.write_bytes(Path(path), blob.SerializeToString())


def read_binaryproto(path: Path) -> np.ndarray:
    """The C x H x W mean image of a .binaryproto; a file that is missing or holds no mean
    image is an InputError naming it (Caffe would abort on it)."""
    blob = caffe_pb2().BlobProto()
    try:
        blob.ParseFromString(Path(path).read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except DecodeError as exc:
        raise InputError(f"{path}: not a mean .binaryproto ({exc})") from None
    if blob.HasField("shape") and len(blob.shape.dim) == 4:
        shape = tuple(blob.shape.dim)[1:]
    else:
        shape = (blob.channels, blob.height, blob.width)
    if not blob.data or len(blob.data) != int(np.prod(shape)):
        raise InputError(f"{path}: not a mean image ({len(blob.data)} values for shape "
                         f"{list(shape)})")
    return np.asarray(blob.data, dtype=np.float32).reshape(shape)
