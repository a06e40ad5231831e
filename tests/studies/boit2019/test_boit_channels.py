"""ChestX-ray14 is gray: it fills Caffe's three channels alike (stored as 8-bit; the Data
layer subtracts each channel's own BGR mean), the picture -> Caffe channel rule holds
trivially, and the manifest says so."""

from __future__ import annotations

import numpy as np

from medtl.datasets.check import read_through_caffe
from medtl.datasets.manifest import read_manifest
from medtl.nets.densenet import INPUT_SCALE, MEAN_BGR
from medtl.studies.boit2019.dataset import ChestXray14Config, build
from medtl.studies.boit2019.phantoms import write_chestxray14_collection


def test_chestxray14_gray_fills_all_three_caffe_channels_as_the_manifest_says(tmp_path):
    root = tmp_path / "ChestX-ray14"
    write_chestxray14_collection(root, patients=12, size=32, per_folder=15, seed=5)
    dest = build(root, tmp_path / "ds", ChestXray14Config(image_size=32, crop_size=28),
                 progress=False)
    notes = read_manifest(dest)["notes"]
    assert set(notes["channels"]) == {"0 (B)", "1 (G)", "2 (R)"}
    assert len(set(notes["channels"].values())) == 1
    assert "trivially" in notes["channel_rule"]["replicated"]
    test = next(d for d in read_manifest(dest)["databases"] if d["role"] == "test")
    data, _ = read_through_caffe(test, dest)                   # 8-bit gray, as stored
    assert len(data) and data.std() > 0
    assert notes["caffe_transform"] == {"mean_value": list(MEAN_BGR), "scale": INPUT_SCALE}
    gray = data
    np.testing.assert_allclose(gray[:, 0], gray[:, 1], atol=1e-3)
    np.testing.assert_allclose(gray[:, 1], gray[:, 2], atol=1e-3)
