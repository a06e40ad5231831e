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
