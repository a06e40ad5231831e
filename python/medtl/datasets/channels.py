"""Which picture channel lands in which Caffe input channel: the one rule every builder follows.

The papers describe their network inputs as RGB pictures: Shin 2016 encodes the axial,
coronal and sagittal views of a lymph node "in RGB color images" (Sec. II, Fig. 1) and the
lung / high- / low-attenuation windows of an ILD slice "into red/green/blue channels"
(Fig. 4); Tajbakhsh 2016 repeats the second channel of its PE patches into "3-channel
RGB-like image patches" (Sec. VI-B), and its colonoscopy frames are colour video.

A Caffe pipeline of their time stored such a picture with `convert_imageset`: it reads the
file through OpenCV (`cv::imread`, which yields B, G, R) and `CVMatToDatum` writes the
channels in that order (BVLC Caffe 1.0, src/caffe/util/io.cpp). The BVLC ImageNet models
were trained on databases built that way, so their conv1 reads channel 0 as blue and
channel 2 as red. Hence the rule: the picture's R goes to Caffe channel 2, G to 1, B to 0.
Builders render pictures in R, G, B order and store them through :func:`to_caffe`; their
manifests name what each Caffe channel holds (:func:`channel_notes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medtl.datasets.manifest import ManifestError, read_manifest
from medtl.provenance import Sourced, assumed

CAFFE_CHANNELS = ("B", "G", "R")  # Caffe input channel c holds the picture's CAFFE_CHANNELS[c]

CAFFE_ORDER = Sourced(
    CAFFE_CHANNELS,
    source="BVLC Caffe 1.0 convention: convert_imageset reads images with OpenCV cv::imread "
           "(B, G, R) and CVMatToDatum keeps that order (src/caffe/util/io.cpp); "
           "python/classify.py: 'BGR is the Caffe default by way of OpenCV'; the BVLC "
           "ImageNet models were trained on such databases")

PICTURE_TO_CAFFE = assumed(
    "picture R -> Caffe channel 2, G -> 1, B -> 0",
    "the papers name their channels as an RGB picture's (Shin 2016 Sec. II / Fig. 1 and "
    "Fig. 4, Tajbakhsh 2016 Sec. VI-B) but not how the pictures entered Caffe; a Caffe "
    "pipeline of 2016 stored them with convert_imageset, i.e. in Caffe's B, G, R order")


def to_caffe(picture: np.ndarray, axis: int = 0) -> np.ndarray:
    """A picture's channels in R, G, B order along `axis` -> Caffe's B, G, R order (a copy)."""
    if picture.shape[axis] != 3:
        raise ValueError(f"expected 3 channels along axis {axis}, got shape {picture.shape}")
    return np.ascontiguousarray(np.flip(picture, axis))


def to_picture(caffe: np.ndarray, axis: int = 0) -> np.ndarray:
    """The inverse of :func:`to_caffe`: Caffe channels -> R, G, B (to draw them in colour)."""
    return to_caffe(caffe, axis)


def channel_notes(red: str, green: str, blue: str, source: str) -> dict[str, Any]:
    """Manifest notes: what each Caffe channel holds, and the rule that put it there.
    `source` says where the picture's colour assignment comes from (the paper's words)."""
    return {"channels": {"0 (B)": blue, "1 (G)": green, "2 (R)": red},
            "channel_rule": {"picture": source, "rule": PICTURE_TO_CAFFE.to_dict(),
                             "caffe_order": CAFFE_ORDER.to_dict()}}


def gray_notes(what: str, source: str) -> dict[str, Any]:
    """Manifest notes of a gray image replicated in all three channels: the rule holds
    trivially (every channel is the same picture)."""
    notes = channel_notes(what, what, what, source)
    notes["channel_rule"]["replicated"] = ("gray in all three channels: the picture -> "
                                           "Caffe order is trivially satisfied")
    return notes


def dataset_channels(dataset_dir: str | Path | None) -> dict[str, str] | None:
    """What each Caffe channel holds, as the dataset's manifest names it (None when the
    dataset or its note is not there, e.g. a dataset built before the note existed)."""
    if dataset_dir is None:
        return None
    try:
        channels = read_manifest(Path(dataset_dir)).get("notes", {}).get("channels")
    except ManifestError:
        return None
    return channels if isinstance(channels, dict) else None


def legend(channels: dict[str, str] | None, sep: str = "\n") -> str:
    """How a colour drawing of Caffe input channels reads (red = Caffe channel 2, ...),
    with what each channel holds when the dataset's manifest names it."""
    parts = []
    for colour, key in (("red", "2 (R)"), ("green", "1 (G)"), ("blue", "0 (B)")):
        what = f" = {channels[key]}" if channels and key in channels else ""
        parts.append(f"{colour}: Caffe channel {key[0]}{what}")
    return sep.join(parts)
