"""Train / val / deploy variants of a classification body.

A body is a function `body(bottom, num_classes, n) -> classifier top` that adds its layers
to NetSpec `n`; this module puts the data layer in front and the loss (or softmax) behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medtl.caffe_env import caffe
from medtl.nets.layers import lmdb_data

Body = Callable[..., object]


@dataclass(frozen=True)
class DataSpec:
    """Where a variant reads from and how Caffe transforms the input."""

    source: str
    batch_size: int
    crop_size: int = 0
    mirror: bool = False
    mean_file: str | None = None
    mean_value: tuple[float, ...] = ()
    scale: float = 1.0


def train_net(body: Body, num_classes: int, data: DataSpec, name: str):
    """Data (TRAIN) -> body -> SoftmaxWithLoss."""
    return _with_data(body, num_classes, data, name, phase="train")


def val_net(body: Body, num_classes: int, data: DataSpec, name: str):
    """Data (TEST) -> body -> SoftmaxWithLoss + Accuracy + Softmax probabilities."""
    return _with_data(body, num_classes, data, name, phase="test")


def deploy_net(body: Body, num_classes: int, input_shape: tuple[int, int, int, int], name: str):
    """Input blob `data` of `input_shape` -> body -> Softmax `prob`."""
    c = caffe()
    n = c.NetSpec()
    n.data = c.layers.Input(shape=dict(dim=list(input_shape)))
    top = body(n.data, num_classes, n)
    n.prob = c.layers.Softmax(top)
    proto = n.to_proto()
    proto.name = name
    return proto


def _with_data(body: Body, num_classes: int, data: DataSpec, name: str, phase: str):
    c = caffe()
    n = c.NetSpec()
    n.data, n.label = lmdb_data(data.source, data.batch_size, phase=phase,
                                crop_size=data.crop_size, mirror=data.mirror,
                                mean_file=data.mean_file, mean_value=data.mean_value,
                                scale=data.scale)
    top = body(n.data, num_classes, n)
    n.loss = c.layers.SoftmaxWithLoss(top, n.label)
    if phase == "test":
        n.accuracy = c.layers.Accuracy(top, n.label)
        n.prob = c.layers.Softmax(top)
    proto = n.to_proto()
    proto.name = name
    return proto
