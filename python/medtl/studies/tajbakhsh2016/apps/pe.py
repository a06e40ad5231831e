"""Tajbakhsh 2016 Sec. VI-B, pulmonary embolism detection: vessel-aligned 2-channel patches
of CTPA candidates, made 3-channel by repeating the second channel.

For a candidate at centre c with vessel axis a, the patch frame has axes (u, v, a) with u, v
perpendicular to the vessel. Channel 1 is the cross-section (the u-v plane through c),
channel 2 the longitudinal view (the u-a plane, the vessel running top to bottom); the
"RGB-like" picture is [cross-section, longitudinal, longitudinal] as R, G, B, stored in
Caffe's channel order: [longitudinal, longitudinal, cross-section] (`medtl.datasets.channels`).
Augmentation: patch sides 10, 15 and 20 mm; the centre translated along the vessel 3 times
(by -20%, 0 and +20% of the side); the planes in the reference orientation and 5 more
rotations about the vessel axis, 6 orientations: 54 patches per candidate, for training
and test alike. Planes are sampled by cubic B-spline interpolation (`medtl.datasets.views`), then
resized to the net input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.config import option
from medtl.datasets.channels import channel_notes, to_caffe
from medtl.datasets.formats.candidates import Candidate, Schema
from medtl.datasets.formats.images import read_volume
from medtl.datasets.formats.resize import resize
from medtl.datasets.views import ViewParams, ViewSampler
from medtl.provenance import assumed, paper
from medtl.studies.tajbakhsh2016.dataset import TajbakhshConfig

SEC = "Tajbakhsh 2016 Sec. VI-B"
CLASSES = ("non-pe", "pe")
CHANNELS_SOURCE = (f"{SEC}: 2-channel patches (cross-sectional, longitudinal); 'we simply "
                   "repeated the second channel and produced 3-channel RGB-like image "
                   "patches': R cross-section, G and B longitudinal")
SCHEMA = Schema("pe", CLASSES, geometry="centre3d", label="required", axis=True, volume=True,
                aliases={"negative": 0, "positive": 1, "fp": 0, "tp": 1})


@dataclass(frozen=True)
class PeConfig(TajbakhshConfig):
    train_patches: int = option(81_000, "stratified training patches (training + validation)",
                                paper(81_000, f"{SEC}: 'a stratified training set with 81,000 "
                                      "image patches'"))
    reductions: list[float] = option(
        [0.5, 0.25], "fractions of the training data kept (whole patients)",
        paper([0.5, 0.25], f"{SEC}: training samples reduced to 50% and 25%"))
    sizes_mm: list[float] = option([10.0, 15.0, 20.0], "physical patch sides (mm)",
                                   paper([10.0, 15.0, 20.0], f"{SEC}: 10 mm-, 15 mm- and 20 "
                                         "mm-wide patches"))
    translations: list[float] = option(
        [-0.2, 0.0, 0.2], "shifts along the vessel, as shares of the patch side",
        assumed([-0.2, 0.0, 0.2], f"{SEC}: '3 times, up to 20% of the physical size'; the "
                "three are taken symmetric about the candidate"))
    rotations: int = option(6, "orientations about the vessel axis (the first unrotated)",
                            paper(6, f"{SEC}: 'rotating the longitudinal and cross-sectional "
                                  "vessel planes around the vessel axis, resulting in 5 "
                                  "additional variations for each scale and translation': "
                                  "the unrotated planes and 5 rotations"))
    rotation_span_deg: float = option(
        180.0, "the rotations are spread evenly over [0, span) degrees",
        assumed(180.0, "not given; the longitudinal plane repeats every 180 degrees"))
    sample_px: int = option(32, "pixels per side sampled in the volume before resizing to "
                            "patch_size",
                            assumed(32, "the paper gives only physical sizes; 32 samples across"
                                    " 10-20 mm is finer than CTPA voxels"))
    hu_window: tuple[float, float] = option(
        (-100.0, 500.0), "HU mapped linearly to 0..255",
        assumed((-100.0, 500.0), "not given; spans clot (~50 HU) to contrast-filled artery "
                "(~300-400 HU)"))
    pad_hu: float = option(-1024.0, "HU outside the volume",
                           assumed(-1024.0, "outside the scan is taken as air"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sizes_mm or any(s <= 0 for s in self.sizes_mm):
            raise ValueError(f"sizes_mm must be positive, got {self.sizes_mm}")
        if not self.translations:
            raise ValueError("translations must list at least one shift (0 for none)")
        if self.rotations < 1:
            raise ValueError("rotations must be at least 1")
        if self.hu_window[0] >= self.hu_window[1]:
            raise ValueError(f"hu_window must be increasing, got {self.hu_window}")
        if self.sample_px < 4:
            raise ValueError("sample_px must be at least 4")


def vessel_frame(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """3 x 3 rotation whose columns are (u, v, axis): u, v span the cross-section, turned by
    `angle_rad` about the axis from a reference u (perpendicular to the axis and to the world
    direction least aligned with it, so the frame is fixed by the axis alone)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    ref = np.eye(3)[int(np.argmin(np.abs(a)))]
    u0 = np.cross(a, ref)
    u0 /= np.linalg.norm(u0)
    v0 = np.cross(a, u0)
    u = np.cos(angle_rad) * u0 + np.sin(angle_rad) * v0
    v = np.cross(a, u)
    return np.stack([u, v, a], axis=1)


class PeApp:
    name = "pe"
    classes = CLASSES
    schema = SCHEMA
    test_columns = ("size_mm", "shift", "rotation_deg")

    def __init__(self, cfg: PeConfig) -> None:
        self.cfg = cfg
        self.n = len(cfg.sizes_mm) * len(cfg.translations) * cfg.rotations
        self.dicom_notes: dict[str, list[str]] = {}   # patient -> files skipped, padding

    def check(self, cands: list[Candidate]) -> list[Candidate]:
        return cands

    def variant(self, v: int) -> tuple[float, float, float]:
        """(side mm, shift as a share of the side, rotation degrees) of variant v."""
        cfg = self.cfg
        per_size = len(cfg.translations) * cfg.rotations
        size = cfg.sizes_mm[v // per_size]
        shift = cfg.translations[(v // cfg.rotations) % len(cfg.translations)]
        angle = (v % cfg.rotations) * cfg.rotation_span_deg / cfg.rotations
        return size, shift, angle

    def params(self, cand: Candidate, variants: np.ndarray) -> ViewParams:
        fov, trans, rot = [], [], []
        axis = np.asarray(cand.axis)
        for v in variants:
            size, shift, angle = self.variant(int(v))
            fov.append(size)
            trans.append(axis * shift * size)
            rot.append(vessel_frame(axis, np.deg2rad(angle)))
        return ViewParams(np.array(fov), np.array(trans), np.array(rot))

    def pools(self, cand: Candidate) -> tuple[int, ...]:
        out = [0, 0]
        out[cand.label] = self.n
        return tuple(out)

    def test_count(self, cand: Candidate) -> int:
        return self.n

    def load(self, image: Path, jobs) -> tuple[ViewSampler, str, int]:
        vol = read_volume(image)
        if vol.notes:   # a volume loaded again (iter_patches) adds nothing new
            noted = self.dicom_notes.setdefault(jobs[0][0].group, [])
            noted.extend(n for n in vol.notes if n not in noted)
        sampler = ViewSampler(vol.hu, vol.geometry, size=self.cfg.sample_px,
                              pad_hu=self.cfg.pad_hu)
        centres = np.concatenate([np.repeat([cand.centre], len(idx), 0)
                                  for cand, _, _, idx in jobs])
        params = ViewParams.concat([self.params(cand, idx) for cand, _, _, idx in jobs])
        sampler.prepare(centres, params)
        return sampler, vol.digest, vol.files

    def render(self, source, cand: Candidate, stream: str, cls: int,
               indices: np.ndarray) -> np.ndarray:
        sampler = source[0]
        views = sampler.render(np.repeat([cand.centre], len(indices), 0),
                               self.params(cand, indices), self.cfg.hu_window)
        # the picture: R cross-section (u-v plane), G and B longitudinal (u-axis plane)
        two = to_caffe(views[:, [0, 1, 1]], axis=1)
        s = self.cfg.patch_size
        return np.stack([resize(p, s, s) for p in two])

    def test_values(self, cand: Candidate, variant: int) -> list[Any]:
        size, shift, angle = self.variant(variant)
        return [f"{size:g}", f"{shift:g}", f"{angle:g}"]

    def source_of(self, image: Path, source: Any) -> tuple[str | None, str, int]:
        _, digest, files = source
        return digest, "volume", files

    def extra_files(self, directory: Path, cands: list[Candidate],
                    role: dict[str, str]) -> dict[str, Any]:
        return {}

    def notes(self) -> dict[str, Any]:
        return {**channel_notes("cross-section", "longitudinal", "longitudinal",
                                CHANNELS_SOURCE),
                "longitudinal_view": "columns along u, rows along the vessel: the top row "
                                     "lies on the +axis side of the centre",
                "coordinates": "centre and axis in world mm (ITK / DICOM LPS)",
                "reduction_unit": "assumed: whole patients; the paper reduces 'at the PE "
                                  "level', which leaves false candidates undefined",
                "patches_per_candidate": self.n,
                **({"dicom": dict(sorted(self.dicom_notes.items()))} if self.dicom_notes
                   else {})}
