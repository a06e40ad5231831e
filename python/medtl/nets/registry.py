"""Every network the kit can build, by name.

Each entry lives in its own module as a `ModelSpec` constant; the table below maps the
user-facing name to it, so `get_model("alexnet-h")` is the one way in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module

from medtl.errors import MedtlError
from medtl.nets.body import Body


@dataclass(frozen=True)
class ModelSpec:
    """A network body with the facts a study needs about it."""

    name: str                      # user-facing name, e.g. "alexnet-h"
    body: Body
    crop_size: int                 # network input (after Caffe's crop), pixels
    image_size: int                # stored image size the crop is taken from
    zoo_model: str | None          # BVLC model-zoo definition whose names/weights it follows
    classifiers: tuple[str, ...]   # renamed classifier layers: always new, never copied
    # Layers in forward order, grouped as the papers name them for layer-wise
    # fine-tuning ("conv1" ... "fc8"); each group lists the Caffe layers with parameters.
    layer_groups: tuple[tuple[str, tuple[str, ...]], ...]
    source: str                    # where the definition comes from (paper, table, section)
    notes: tuple[str, ...] = field(default=())  # assumptions and known mismatches


_ENTRIES: dict[str, str] = {
    "cifarnet": "medtl.nets.cifarnet:CIFARNET",
    "alexnet-h": "medtl.nets.alexnet:ALEXNET_H",
    "alexnet-l": "medtl.nets.alexnet:ALEXNET_L",
    "caffenet": "medtl.nets.alexnet:CAFFENET",
    "overfeat": "medtl.nets.overfeat:OVERFEAT_FAST",
    "vgg16": "medtl.nets.vgg:VGG16",
    "googlenet-h": "medtl.nets.googlenet:GOOGLENET_H",
    "googlenet-l": "medtl.nets.googlenet:GOOGLENET_L",
    "densenet121": "medtl.nets.densenet:DENSENET121",
    "densenet121-boit": "medtl.nets.densenet:DENSENET121_BOIT",
}

# The last spatial feature map of each net, for activation maps (Shin Fig. 13 shows AlexNet's
# pool5, 256 x 6 x 6). Where the last pooling layer is global (GoogLeNet's pool5/7x7_s1,
# DenseNet's pool5: 1 x 1), the map it averages is named instead; DenseNet's blob is read
# after its in-place Scale and ReLU.
FEATURE_MAP_BLOBS: dict[str, str] = {
    "cifarnet": "pool3",
    "alexnet-h": "pool5", "alexnet-l": "pool5", "caffenet": "pool5",
    "overfeat": "pool5", "vgg16": "pool5",
    "googlenet-h": "inception_5b/output", "googlenet-l": "inception_5b/output",
    "densenet121": "conv5_blk/bn", "densenet121-boit": "conv5_blk/bn",
}


class UnknownModelError(MedtlError, KeyError):
    def __str__(self) -> str:
        return f"unknown model {self.args[0]!r}; known models: {', '.join(_ENTRIES)}"


def model_names() -> list[str]:
    return list(_ENTRIES)


def get_model(name: str) -> ModelSpec:
    try:
        module, attr = _ENTRIES[name].split(":")
    except KeyError:
        raise UnknownModelError(name) from None
    return getattr(import_module(module), attr)


def feature_map_blob(name: str) -> str:
    """The blob of model `name` whose activation maps the reports draw (see
    FEATURE_MAP_BLOBS)."""
    get_model(name)
    return FEATURE_MAP_BLOBS[name]
