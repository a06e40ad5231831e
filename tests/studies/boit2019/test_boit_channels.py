"""ChestX-ray14 is gray: it fills Caffe's three channels alike, each minus its own BGR mean
(the picture -> Caffe channel rule holds trivially), and the manifest says so."""

from __future__ import annotations

import numpy as np

from medtl.datasets.hdf5_writer import read_hdf5_list
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
    data, _ = read_hdf5_list(dest / "test" / "test.txt")
    assert len(data) and data.std() > 0
    gray = data / INPUT_SCALE + np.array(MEAN_BGR, np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(gray[:, 0], gray[:, 1], atol=1e-3)
    np.testing.assert_allclose(gray[:, 1], gray[:, 2], atol=1e-3)
