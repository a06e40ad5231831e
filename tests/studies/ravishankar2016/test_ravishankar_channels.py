"""Kidney ultrasound is gray: it fills Caffe's three channels alike (the picture -> Caffe
channel rule holds trivially), and the manifest says so."""

from __future__ import annotations

from medtl.datasets.lmdb_writer import read_lmdb
from medtl.datasets.manifest import read_manifest
from medtl.studies.ravishankar2016.dataset import KidneyConfig, build
from medtl.studies.ravishankar2016.phantoms import write_kidney_collection


def test_kidney_gray_fills_all_three_caffe_channels_as_the_manifest_says(tmp_path):
    write_kidney_collection(tmp_path / "c", subjects=6, images_per_subject=2, size=(96, 72))
    dest = build(tmp_path / "c" / "candidates.csv", tmp_path / "ds",
                 KidneyConfig(patch_size=32, haar_features=0, positives_per_kidney=4,
                              negatives_per_image=6), progress=False)
    notes = read_manifest(dest)["notes"]
    assert set(notes["channels"]) == {"0 (B)", "1 (G)", "2 (R)"}
    assert set(notes["channels"].values()) == {"ultrasound gray"}
    assert "trivially" in notes["channel_rule"]["replicated"]
    assert notes["channel_rule"]["picture"].startswith("assumed")
    records = list(read_lmdb(dest / "train_lmdb"))
    assert records and any(im.std() > 0 for _, im, _ in records)
    for _, im, _ in records:
        assert (im[0] == im[1]).all() and (im[1] == im[2]).all()
