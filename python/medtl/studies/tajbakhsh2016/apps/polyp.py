"""Tajbakhsh 2016 Sec. VI-A, polyp detection: patches of colonoscopy polyp candidates.

Per candidate (a box in a frame): 3 scales (the box enlarged 1.0x, 1.2x, 1.5x), at each
scale the centre translated by 10% of the enlarged box horizontally and vertically, and each
patch in its 8 mirror / flip / rotation variants. A candidate is positive when it lies inside
the ground-truth polyp (the manifest's label, or its box centre inside the `mask` image).
Training: a stratified set of 100,000 patches; test: all patches of every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.config import option
from medtl.datasets.channels import channel_notes
from medtl.datasets.formats.candidates import Candidate, Schema
from medtl.datasets.formats.images import (
    DIHEDRAL,
    box_patch,
    dihedral,
    read_rgb,
    rgb_to_bgr_chw,
    square_patch,
)
from medtl.provenance import assumed, paper
from medtl.studies.tajbakhsh2016.dataset import TajbakhshConfig

SEC = "Tajbakhsh 2016 Sec. VI-A"
COLOUR_SOURCE = f"{SEC}: colour colonoscopy video frames, read as R, G, B"
CLASSES = ("non-polyp", "polyp")
SCHEMA = Schema("polyp", CLASSES, geometry="bbox", label="or_mask",
                aliases={"negative": 0, "positive": 1})
PATTERNS = {
    "grid9": [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, -1), (-1, 1), (1, 1)],
    "cross5": [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)],
}


@dataclass(frozen=True)
class PolypConfig(TajbakhshConfig):
    train_patches: int = option(100_000, "stratified training patches (training + validation)",
                                paper(100_000, f"{SEC}: 'a stratified set of 100,000 training "
                                      "patches'"))
    reductions: list[float] = option([0.5, 0.25], "fractions of the training videos kept",
                                     paper([0.5, 0.25], f"{SEC}: 50% and 25% of the training "
                                           "data, reduced at the video level"))
    scales: list[float] = option([1.0, 1.2, 1.5], "box enlargement factors",
                                 paper([1.0, 1.2, 1.5], f"{SEC}: 1.0x, 1.2x and 1.5x"))
    translation: float = option(0.1, "centre shift as a share of the enlarged box",
                                paper(0.1, f"{SEC}: 10% of the resized bounding box"))
    translation_pattern: str = option(
        "grid9", "shifts: grid9 = every (dx, dy) in {-1, 0, 1}^2, cross5 = none, left, right, "
        "up, down",
        assumed("grid9", f"{SEC} says 'in horizontal and vertical directions' without the "
                "combinations; all nine are taken"), choices=tuple(PATTERNS))
    flips: int = option(8, "mirror / flip / rotation variants per patch (1..8)",
                        paper(8, f"{SEC}: 'rotated each resulting patch 8 times by horizontal "
                              "and vertical mirroring and flipping'"))
    square: bool = option(True, "square patches of the box's longer side (false: the box "
                          "itself, stretched)",
                          assumed(True, "not given; a square keeps the polyp's shape"))
    fill: int = option(0, "gray level outside the frame",
                       assumed(0, "not given; black, like the frame's dark border"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {self.scales}")
        if not 1 <= self.flips <= 8:
            raise ValueError(f"flips must lie in 1..8, got {self.flips}")
        if self.translation < 0:
            raise ValueError(f"translation must be >= 0, got {self.translation}")


class PolypApp:
    name = "polyp"
    classes = CLASSES
    schema = SCHEMA
    test_columns = ("scale", "dx", "dy", "flip")

    def __init__(self, cfg: PolypConfig) -> None:
        self.cfg = cfg
        self.shifts = PATTERNS[cfg.translation_pattern]
        self.n = len(cfg.scales) * len(self.shifts) * cfg.flips

    def check(self, cands: list[Candidate]) -> list[Candidate]:
        return cands

    def variant(self, v: int) -> tuple[float, tuple[int, int], int]:
        """(scale, (dx, dy) in units of the translation, dihedral index) of variant v."""
        per_scale = len(self.shifts) * self.cfg.flips
        return (self.cfg.scales[v // per_scale], self.shifts[(v // self.cfg.flips)
                                                             % len(self.shifts)],
                v % self.cfg.flips)

    def pools(self, cand: Candidate) -> tuple[int, ...]:
        out = [0, 0]
        out[cand.label] = self.n
        return tuple(out)

    def test_count(self, cand: Candidate) -> int:
        return self.n

    def load(self, image: Path, jobs) -> np.ndarray:
        return rgb_to_bgr_chw(read_rgb(image))

    def patch(self, frame: np.ndarray, cand: Candidate, scale: float, shift: tuple[int, int]
              ) -> np.ndarray:
        """The unflipped patch of one scale and shift."""
        x0, y0, x1, y1 = cand.box
        cx, cy = cand.box_centre
        w, h = (x1 - x0) * scale, (y1 - y0) * scale
        if self.cfg.square:
            w = h = max(w, h)
        cx += shift[0] * self.cfg.translation * w
        cy += shift[1] * self.cfg.translation * h
        if self.cfg.square:
            return square_patch(frame, cx, cy, w, self.cfg.patch_size, self.cfg.fill)
        return box_patch(frame, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2,
                         self.cfg.patch_size, self.cfg.fill)

    def render(self, frame: np.ndarray, cand: Candidate, stream: str, cls: int,
               indices: np.ndarray) -> np.ndarray:
        out, cache = [], {}
        for v in indices:
            scale, shift, flip = self.variant(int(v))
            key = (scale, shift)
            if key not in cache:
                cache[key] = self.patch(frame, cand, scale, shift)
            out.append(dihedral(cache[key], flip))
        return np.stack(out)

    def test_values(self, cand: Candidate, variant: int) -> list[Any]:
        scale, (dx, dy), flip = self.variant(variant)
        t = self.cfg.translation
        return [f"{scale:g}", f"{dx * t:g}", f"{dy * t:g}", DIHEDRAL[flip]]

    def source_of(self, image: Path, source: Any) -> tuple[str | None, str, int]:
        return None, "image", 1

    def extra_files(self, directory: Path, cands: list[Candidate],
                    role: dict[str, str]) -> dict[str, Any]:
        return {}

    def notes(self) -> dict[str, Any]:
        return {**channel_notes("frame red", "frame green", "frame blue", COLOUR_SOURCE),
                "label_rule": "positive when the candidate's box centre lies inside the "
                              "ground-truth mask (or as the manifest's label says)",
                "patches_per_candidate": self.n,
                "variant_order": "scale-major, then shift, then flip (test_index.csv)"}
