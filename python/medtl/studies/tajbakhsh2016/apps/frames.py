"""Tajbakhsh 2016 Sec. VI-C, colonoscopy frame classification (image quality): informative
vs non-informative frames; 200 random 227 x 227 crops of each 500 x 350 frame, for training
and test alike (a test frame's probability is the mean over its crops).

Crop positions come from a random stream of their own per frame, so crop k of a frame is the
same in every set that uses it. The paper's 6 videos are too few to reduce at the video level
(1/100 of ~3 training videos), so this application splits and reduces by frame by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.config import option
from medtl.datasets.channels import channel_notes
from medtl.datasets.formats.candidates import Candidate, Schema
from medtl.datasets.formats.images import crop_padded, read_rgb, rgb_to_bgr_chw
from medtl.datasets.formats.resize import resize
from medtl.provenance import assumed, paper
from medtl.studies.tajbakhsh2016.dataset import TajbakhshConfig, stream_rng

SEC = "Tajbakhsh 2016 Sec. VI-C"
COLOUR_SOURCE = f"{SEC}: colour colonoscopy video frames, read as R, G, B"
CLASSES = ("non-informative", "informative")
SCHEMA = Schema("frames", CLASSES, geometry="none", label="required",
                aliases={"negative": 0, "positive": 1, "bad": 0, "good": 1})


@dataclass(frozen=True)
class FramesConfig(TajbakhshConfig):
    train_patches: int = option(40_000, "stratified training crops (training + validation)",
                                paper(40_000, f"{SEC}: 'a stratified training set with "
                                      "approximately 40,000 sub-images'"))
    split_unit: str = option(
        "candidate", "unit of the validation split and the reductions: group or candidate",
        assumed("candidate", f"{SEC}: 6 videos, about 3 for training, cannot be cut to 1/100 "
                "at the video level; frames are the unit (a frame's crops stay together)"),
        choices=("group", "candidate"))
    reductions: list[float] = option([0.1, 0.05, 0.01], "fractions of the training frames kept",
                                     paper([0.1, 0.05, 0.01], f"{SEC}: training samples "
                                           "reduced by factors of 1/10, 1/20 and 1/100"))
    crops_per_frame: int = option(200, "random crops per frame (training and test)",
                                  paper(200, f"{SEC}: '200 sub-images ... from random "
                                        "locations in each ... frame'"))
    frame_size: tuple[int, int] = option(
        (500, 350), "frames of another size are resized to this width, height first",
        paper((500, 350), f"{SEC}: 500x350 colonoscopy frames"))
    patch_size: int = option(227, "crop side (pixels), stored as is",
                             paper(227, f"{SEC}: sub-images of size 227x227"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crops_per_frame < 1:
            raise ValueError("crops_per_frame must be at least 1")
        w, h = self.frame_size
        if self.patch_size > min(w, h):
            raise ValueError(f"a {self.patch_size} crop does not fit a {w} x {h} frame")


class FramesApp:
    name = "frames"
    classes = CLASSES
    schema = SCHEMA
    test_columns = ("x0", "y0")

    def __init__(self, cfg: FramesConfig) -> None:
        self.cfg = cfg

    def check(self, cands: list[Candidate]) -> list[Candidate]:
        return cands

    def crop_origins(self, cand: Candidate, stream: str) -> np.ndarray:
        """(crops_per_frame, 2) top-left (x, y) of every crop of a frame in a stream."""
        w, h = self.cfg.frame_size
        s = self.cfg.patch_size
        rng = stream_rng(self.cfg.seed, f"frame-crops-{stream}", cand.candidate_id)
        n = self.cfg.crops_per_frame
        return np.stack([rng.integers(0, w - s + 1, n), rng.integers(0, h - s + 1, n)], 1)

    def pools(self, cand: Candidate) -> tuple[int, ...]:
        out = [0, 0]
        out[cand.label] = self.cfg.crops_per_frame
        return tuple(out)

    def test_count(self, cand: Candidate) -> int:
        return self.cfg.crops_per_frame

    def load(self, image: Path, jobs) -> np.ndarray:
        frame = rgb_to_bgr_chw(read_rgb(image))
        w, h = self.cfg.frame_size
        if frame.shape[1:] != (h, w):
            frame = resize(frame, h, w)
        return frame

    def render(self, frame: np.ndarray, cand: Candidate, stream: str, cls: int,
               indices: np.ndarray) -> np.ndarray:
        origins = self.crop_origins(cand, stream)[indices]
        s = self.cfg.patch_size
        return np.stack([crop_padded(frame, int(x), int(y), s, s) for x, y in origins])

    def test_values(self, cand: Candidate, variant: int) -> list[Any]:
        x, y = self.crop_origins(cand, "test")[variant]
        return [int(x), int(y)]

    def source_of(self, image: Path, source: Any) -> tuple[str | None, str, int]:
        return None, "image", 1

    def extra_files(self, directory: Path, cands: list[Candidate],
                    role: dict[str, str]) -> dict[str, Any]:
        return {}

    def notes(self) -> dict[str, Any]:
        w, h = self.cfg.frame_size
        return {**channel_notes("frame red", "frame green", "frame blue", COLOUR_SOURCE),
                "crops": f"uniform random top-left corners in a {w} x {h} frame, one random "
                         "stream per frame and set (train / test)",
                "test_index": "rank -> frame; average a frame's crop probabilities"}
