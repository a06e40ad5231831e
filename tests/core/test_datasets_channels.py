"""The one channel rule: an RGB picture's R lands in Caffe channel 2 (Caffe stores B, G, R),
and the filter mosaics draw Caffe channel 2 as red."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medtl.caffe_env import caffe_pb2
from medtl.datasets.channels import (
    CAFFE_ORDER,
    PICTURE_TO_CAFFE,
    channel_notes,
    dataset_channels,
    gray_notes,
    legend,
    to_caffe,
    to_picture,
)
from medtl.datasets.formats.images import rgb_to_bgr_chw
from medtl.datasets.manifest import Manifest
from medtl.experiments.report import figures
from medtl.experiments.report.context import FinishedRun


def test_a_picture_s_red_lands_in_caffe_channel_2_and_back():
    picture = np.stack([np.full((2, 3), v, np.uint8) for v in (200, 100, 30)])  # R, G, B
    stored = to_caffe(picture)
    assert [int(stored[c, 0, 0]) for c in range(3)] == [30, 100, 200]
    assert (to_picture(stored) == picture).all()
    views = np.stack([picture, picture + 1])                                   # V x 3 x H x W
    assert (to_caffe(views, axis=1)[:, 2] == views[:, 0]).all()
    hwc = picture.transpose(1, 2, 0)
    assert (rgb_to_bgr_chw(hwc) == stored).all()                              # one rule
    with pytest.raises(ValueError, match="3 channels"):
        to_caffe(np.zeros((4, 2, 2)))


def test_the_rule_carries_its_provenance():
    assert CAFFE_ORDER.value == ("B", "G", "R") and "convert_imageset" in CAFFE_ORDER.source
    assert "cv::imread" in CAFFE_ORDER.source
    assert PICTURE_TO_CAFFE.is_assumed and "Fig. 1" in PICTURE_TO_CAFFE.assumed
    notes = channel_notes("axial plane", "coronal plane", "sagittal plane", "Shin Fig. 1")
    assert notes["channels"] == {"0 (B)": "sagittal plane", "1 (G)": "coronal plane",
                                 "2 (R)": "axial plane"}
    assert notes["channel_rule"]["picture"] == "Shin Fig. 1"
    assert "convert_imageset" in notes["channel_rule"]["caffe_order"]["source"]
    gray = gray_notes("gray", "replicated")
    assert set(gray["channels"].values()) == {"gray"}
    assert "trivially" in gray["channel_rule"]["replicated"]


def _caffemodel(path, only_channel: int) -> None:
    """A conv1 of 4 filters whose weights are 1 in one input channel and 0 elsewhere."""
    net = caffe_pb2().NetParameter()
    layer = net.layer.add()
    layer.name, layer.type = "conv1", "Convolution"
    w = np.zeros((4, 3, 5, 5), np.float32)
    w[:, only_channel] = 1.0
    blob = layer.blobs.add()
    blob.shape.dim.extend(w.shape)
    blob.data.extend(w.ravel().tolist())
    path.write_bytes(net.SerializeToString())


def _run(tmp_path, dataset_dir) -> FinishedRun:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return FinishedRun("r1", "cfg", "label", 1, 1.0, 0, run_dir,
                       {"dataset": {"dir": str(dataset_dir)}}, {})


def _colours(path) -> dict[str, int]:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return {"red": int(((r > 200) & (g < 60) & (b < 60)).sum()),
            "blue": int(((b > 200) & (r < 60) & (g < 60)).sum())}


def test_filter_mosaic_draws_caffe_channel_2_as_red_and_names_the_channels(
        tmp_path, monkeypatch):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    manifest = Manifest("ds", __name__, 0, {}, {}, ["a", "b"])
    manifest.notes = channel_notes("axial plane", "coronal plane", "sagittal plane", "Fig. 1")
    manifest.write(dataset)
    assert dataset_channels(dataset)["2 (R)"] == "axial plane"
    assert dataset_channels(tmp_path / "nowhere") is None
    run = _run(tmp_path, dataset)
    titles = []
    save = figures.save_figure

    def keep_title(fig, path):
        titles.append(fig._suptitle.get_text())
        return save(fig, path)

    monkeypatch.setattr(figures, "save_figure", keep_title)
    _caffemodel(run.run_dir / "selected.caffemodel", only_channel=2)
    red = _colours(figures.filter_figure("net", run, tmp_path / "fig2"))
    _caffemodel(run.run_dir / "selected.caffemodel", only_channel=0)
    blue = _colours(figures.filter_figure("net", run, tmp_path / "fig0"))
    assert red["red"] > 100 and red["blue"] == 0      # Caffe channel 2 (the picture's R)
    assert blue["blue"] > 100 and blue["red"] == 0    # Caffe channel 0 (the picture's B)
    assert "red: Caffe channel 2 = axial plane" in titles[0]
    assert "blue: Caffe channel 0 = sagittal plane" in titles[0]
    assert legend(None, "; ").startswith("red: Caffe channel 2; green: Caffe channel 1")
