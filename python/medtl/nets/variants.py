"""Train / val / deploy variants of a classification body (see `medtl.nets.body`).

The data layer goes in front (an LMDB `Data` layer with Caffe's transform_param, or an
`HDF5Data` list file) and the losses behind: softmax for single-label tasks, sigmoid
cross-entropy for multi-label ones (ChestX-ray14's 14 labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medtl.caffe_env import caffe
from medtl.nets.body import Body
from medtl.nets.layers import lmdb_data
from medtl.nets.registry import ModelSpec
from medtl.provenance import Sourced, assumed, derived

Loss = Literal["softmax", "sigmoid"]

BVLC_TRAIN_VAL = ("BVLC's ImageNet train_val convention (models/bvlc_alexnet, "
                  "bvlc_reference_caffenet, bvlc_googlenet train_val.prototxt)")


@dataclass(frozen=True)
class StoredInput:
    """Records a study's dataset stores at the net's input size as 8-bit, leaving a fixed
    per-channel transform to Caffe's Data layer: transform_param mean_value and scale (no crop,
    no mean image). A run takes the values its dataset's manifest records."""

    mean_value: Sourced            # one per channel, BGR
    scale: Sourced


def input_transform(model: ModelSpec, stored: StoredInput | None = None) -> dict[str, Sourced]:
    """How Caffe's Data layer turns a stored image into `model`'s input (LMDB inputs; HDF5
    inputs are stored preprocessed and have no transform_param), with provenance."""
    if stored is not None:
        return {"crop_size": derived(0, "the dataset stores the net's input size: no crop"),
                "mean_value": stored.mean_value, "scale": stored.scale,
                "mirror": derived(False, "the dataset's own augmentation is built into its "
                                         "records; Caffe mirrors nothing")}
    crop, image = model.crop_size, model.image_size
    if image > crop:
        crop_size = assumed(crop, f"a random {crop}x{crop} crop of the {image}x{image} stored "
                                  f"image in TRAIN, the centre crop in TEST (Caffe's Data layer "
                                  f"with crop_size): {BVLC_TRAIN_VAL}; the papers give the "
                                  "input size, not how it is cut from the stored image")
    else:
        crop_size = derived(0, f"the stored {image}x{image} images are the net's input: no crop")
    return {
        "crop_size": crop_size,
        "mean_file": assumed("training-set mean image",
                             "the per-pixel mean image of the training set (mean.binaryproto, "
                             f"as Caffe's compute_image_mean writes it) subtracted: "
                             f"{BVLC_TRAIN_VAL}; the papers name no input normalisation"),
        "mirror": assumed(False, "no random mirroring by Caffe: the papers describe their own "
                                 "augmentation (built into the datasets) and none adds random "
                                 "mirroring; BVLC's ImageNet train_val nets mirror in TRAIN"),
    }


@dataclass(frozen=True)
class DataSpec:
    """Where a variant reads from and how Caffe transforms the input."""

    source: str
    batch_size: int
    backend: Literal["lmdb", "hdf5"] = "lmdb"
    crop_size: int = 0
    mirror: bool = False
    mean_file: str | None = None
    mean_value: tuple[float, ...] = ()
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.backend == "hdf5" and (self.crop_size or self.mirror or self.mean_file
                                       or self.mean_value or self.scale != 1.0):
            raise ValueError("HDF5Data has no transform_param: store the data preprocessed")


def train_net(body: Body, num_classes: int, data: DataSpec, name: str,
              loss: Loss = "softmax"):
    """Data (TRAIN) -> body -> loss per head (auxiliary heads weighted)."""
    return _with_data(body, num_classes, data, name, "train", loss)


def val_net(body: Body, num_classes: int, data: DataSpec, name: str, loss: Loss = "softmax"):
    """Data (TEST) -> body -> losses, plus Accuracy and `prob` of the main head."""
    return _with_data(body, num_classes, data, name, "test", loss)


def deploy_net(body: Body, num_classes: int, input_shape: tuple[int, int, int, int], name: str,
               loss: Loss = "softmax"):
    """Input blob `data` of `input_shape` -> body -> `prob` (Softmax or Sigmoid)."""
    c = caffe()
    n = c.NetSpec()
    n.data = c.layers.Input(shape=dict(dim=list(input_shape)))
    main = body(n, n.data, num_classes, deploy=True)[0]
    n.prob = c.layers.Softmax(main.top) if loss == "softmax" else c.layers.Sigmoid(main.top)
    return _named(n, name)


def _data_layer(data: DataSpec, phase: str):
    c = caffe()
    if data.backend == "hdf5":
        phase_id = {"train": c.TRAIN, "test": c.TEST}[phase]
        return c.layers.HDF5Data(source=data.source, batch_size=data.batch_size,
                                 shuffle=False, include=dict(phase=phase_id), ntop=2)
    return lmdb_data(data.source, data.batch_size, phase=phase, crop_size=data.crop_size,
                     mirror=data.mirror, mean_file=data.mean_file,
                     mean_value=data.mean_value, scale=data.scale)


def _with_data(body: Body, num_classes: int, data: DataSpec, name: str, phase: str,
               loss: Loss):
    c = caffe()
    n = c.NetSpec()
    n.data, n.label = _data_layer(data, phase)
    heads = body(n, n.data, num_classes, deploy=False)
    loss_layer = c.layers.SoftmaxWithLoss if loss == "softmax" else c.layers.SigmoidCrossEntropyLoss
    for head in heads:
        kwargs = {} if head.loss_weight == 1.0 else dict(loss_weight=head.loss_weight)
        n[head.loss_output] = loss_layer(head.top, n.label, name=head.loss_name, **kwargs)
    if phase == "test":
        main = heads[0].top
        if loss == "softmax":
            n.accuracy = c.layers.Accuracy(main, n.label)
            n.prob = c.layers.Softmax(main)
        else:
            n.prob = c.layers.Sigmoid(main)
    return _named(n, name)


def _named(n, name: str):
    proto = n.to_proto()
    proto.name = name
    return proto
