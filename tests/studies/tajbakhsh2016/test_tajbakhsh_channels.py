"""Tajbakhsh's pictures in Caffe's channel order: a colour frame's red and the PE patch's
cross-section (the "RGB-like" picture's first channel) land in Caffe channel 2; gray
ultrasound fills all three; every manifest names what each channel holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medtl.datasets.formats.candidates import read_candidates, write_candidates
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.images import write_nifti
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.datasets.manifest import read_manifest
from medtl.studies.tajbakhsh2016 import applications as tajbakhsh_apps
from medtl.studies.tajbakhsh2016.apps.frames import FramesConfig
from medtl.studies.tajbakhsh2016.apps.imt import ImtConfig
from medtl.studies.tajbakhsh2016.apps.pe import PeConfig
from medtl.studies.tajbakhsh2016.apps.polyp import SCHEMA as POLYP
from medtl.studies.tajbakhsh2016.apps.polyp import PolypConfig
from medtl.studies.tajbakhsh2016.phantoms import (
    write_frame_collection,
    write_imt_collection,
    write_polyp_collection,
)

RGB = (200, 100, 30)
COLOUR_CHANNELS = {"0 (B)": "frame blue", "1 (G)": "frame green", "2 (R)": "frame red"}


def _paint(images: set[Path]) -> None:
    """Every frame one colour, R, G, B = RGB (masks and candidates stay as they are)."""
    for path in images:
        w, h = Image.open(path).size
        Image.fromarray(np.broadcast_to(np.array(RGB, np.uint8), (h, w, 3)).copy()).save(path)


def _centres(dest: Path, db: str) -> np.ndarray:
    """The centre pixel's three Caffe channels of every record of `db`."""
    centres = np.array([im[:, im.shape[1] // 2, im.shape[2] // 2]
                        for _, im, _ in read_lmdb(dest / db)])
    assert len(centres) > 10
    return centres


def test_polyp_frame_red_lands_in_caffe_channel_2(tmp_path):
    root = tmp_path / "c"
    write_polyp_collection(root, videos=6, frames_per_video=2, size=(96, 72), seed=3)
    _paint({c.image for c in read_candidates(root / "candidates.csv", POLYP)})
    dest = tajbakhsh_apps.build("polyp", root / "candidates.csv", tmp_path / "ds",
                                PolypConfig(train_patches=40, patch_size=32, reductions=[]),
                                progress=False)
    notes = read_manifest(dest)["notes"]
    assert notes["channels"] == COLOUR_CHANNELS
    assert "caffe_order" in notes["channel_rule"]
    assert (_centres(dest, "test_lmdb") == RGB[::-1]).all()


def test_frames_red_lands_in_caffe_channel_2(tmp_path):
    root = tmp_path / "c"
    write_frame_collection(root, videos=4, frames_per_video=3, size=(60, 50))
    _paint(set(root.rglob("*.png")))
    dest = tajbakhsh_apps.build("frames", root / "candidates.csv", tmp_path / "ds",
                                FramesConfig(train_patches=24, patch_size=24, frame_size=(60, 50),
                                             crops_per_frame=2, reductions=[]),
                                progress=False)
    assert read_manifest(dest)["notes"]["channels"] == COLOUR_CHANNELS
    assert (_centres(dest, "test_lmdb") == RGB[::-1]).all()


def test_imt_gray_fills_all_three_channels(tmp_path):
    write_imt_collection(tmp_path / "c", subjects=4, rois_per_subject=1, seed=4)
    dest = tajbakhsh_apps.build("imt", tmp_path / "c" / "candidates.csv", tmp_path / "ds",
                                ImtConfig(train_patches=30, patch_size=24, patch_px=12),
                                progress=False)
    notes = read_manifest(dest)["notes"]
    assert set(notes["channels"].values()) == {"ultrasound gray"}
    assert "trivially" in notes["channel_rule"]["replicated"]
    for _, im, _ in read_lmdb(dest / "full/train_lmdb"):
        assert (im[0] == im[1]).all() and (im[1] == im[2]).all()


AXIS = np.array([1.0, 1.0, 0.5]) / np.linalg.norm([1.0, 1.0, 0.5])


def _vessel_collection(root: Path) -> Path:
    """One straight contrast-filled vessel (smooth profile, radius ~2.5 mm) along AXIS with
    candidates on it in 6 groups (labels alternate; only the geometry matters here)."""
    g = Geometry(np.array([-20.0, -20.0, -16.0]), np.array([0.8, 0.8, 1.0]), np.eye(3),
                 (33, 51, 51))
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape), indexing="ij")
    world = g.index_to_world(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*g.shape, 3)
    along = world @ AXIS
    dist = np.linalg.norm(world - along[..., None] * AXIS, axis=-1)
    write_nifti(root / "v.nii.gz", -800.0 + 1100.0 * np.exp(-(dist / 2.5) ** 2), g)
    rows = [{"image": "v.nii.gz", "group": f"p{n // 2}", "candidate_id": f"c{n}",
             "label": "pe" if n % 2 else "non-pe",
             **dict(zip(("cx", "cy", "cz"), AXIS * (n - 5.5) * 0.5, strict=True)),
             "ax": AXIS[0], "ay": AXIS[1], "az": AXIS[2]} for n in range(12)]
    write_candidates(root / "c.csv", rows)
    return root / "c.csv"


def test_pe_cross_section_lands_in_caffe_channel_2(tmp_path):
    csv_path = _vessel_collection(tmp_path)
    cfg = PeConfig(train_patches=24, patch_size=32, sample_px=32, sizes_mm=[15.0],
                   reductions=[])
    dest = tajbakhsh_apps.build("pe", csv_path, tmp_path / "ds", cfg, progress=False)
    notes = read_manifest(dest)["notes"]
    assert notes["channels"] == {"0 (B)": "longitudinal", "1 (G)": "longitudinal",
                                 "2 (R)": "cross-section"}
    assert "RGB-like" in notes["channel_rule"]["picture"]
    records = [im.astype(float) for _, im, _ in read_lmdb(dest / "test_lmdb")]
    assert len(records) == 6 * 3 * 6        # test candidates x shifts x orientations
    for im in records:
        assert (im[0] == im[1]).all()       # the longitudinal view, repeated
        # longitudinal: the vessel runs top to bottom, so rows barely change down the
        # patch; the cross-section is a centred disc, as round one way as the other
        down = [np.abs(np.diff(im[c], axis=0)).mean() for c in (1, 2)]
        across = [np.abs(np.diff(im[c], axis=1)).mean() for c in (1, 2)]
        assert down[0] < 0.2 * across[0]
        assert 0.7 < down[1] / across[1] < 1.4
