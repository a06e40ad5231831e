"""Haar-like features (Viola & Jones 2001) of image patches: Ravishankar et al. 2016 compare
CaffeNet fc7 features with "about 2,000" Haar features of the same kidney patches.

A bank holds rectangle features of five kinds in a window x window frame: two-rectangle edges
(left-right, top-bottom), three-rectangle lines (horizontal, vertical) and the four-rectangle
checkerboard. Every feature at every position and size on a `step`-pixel grid is enumerated
in a fixed order and `n_features` of them are taken evenly spaced through that list, so a
bank is fully determined by (window, n_features, step). A patch is converted to gray, resized
to the window (area average), normalised to zero mean and unit variance (Viola-Jones's
lighting correction), and each feature is the weighted sum of its rectangles' means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from medtl import io
from medtl.datasets.formats.resize import resize
from medtl.datasets.lmdb_writer import open_lmdb, read_lmdb
from medtl.errors import ConfigError, MissingFileError, OutputExistsError
from medtl.progress import bar

# kind -> (unit width, unit height, rectangles as (x, y, w, h, weight) in units)
KINDS = {
    "edge_lr": (2, 1, ((0, 0, 1, 1, 1.0), (1, 0, 1, 1, -1.0))),
    "edge_tb": (1, 2, ((0, 0, 1, 1, 1.0), (0, 1, 1, 1, -1.0))),
    "line_h": (3, 1, ((0, 0, 1, 1, 1.0), (1, 0, 1, 1, -2.0), (2, 0, 1, 1, 1.0))),
    "line_v": (1, 3, ((0, 0, 1, 1, 1.0), (0, 1, 1, 1, -2.0), (0, 2, 1, 1, 1.0))),
    "checker": (2, 2, ((0, 0, 1, 1, 1.0), (1, 0, 1, 1, -1.0), (0, 1, 1, 1, -1.0),
                       (1, 1, 1, 1, 1.0))),
}
MAX_RECTS = 4


@dataclass(frozen=True)
class HaarBank:
    window: int = 24
    n_features: int = 2000
    step: int = 1
    rects: np.ndarray = field(init=False, repr=False)    # (N, 4, 5): x, y, w, h, weight
    kinds: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.window < 3 or self.step < 1 or self.n_features < 1:
            raise ConfigError(f"Haar bank: window {self.window}, step {self.step}, n_features "
                              f"{self.n_features}: window >= 3, step >= 1 and n_features >= 1 "
                              "are required")
        every, kinds = _enumerate(self.window, self.step)
        if len(every) < self.n_features:
            raise ConfigError(f"a {self.window}-pixel window with step {self.step} holds only "
                             f"{len(every)} features, fewer than n_features={self.n_features}")
        pick = np.unique(np.linspace(0, len(every) - 1, self.n_features).round().astype(int))
        object.__setattr__(self, "rects", every[pick])
        object.__setattr__(self, "kinds", tuple(kinds[i] for i in pick))

    def __len__(self) -> int:
        return len(self.rects)

    def describe(self) -> dict:
        counts = {k: self.kinds.count(k) for k in KINDS}
        return {"window": self.window, "step": self.step, "n_features": len(self),
                "per_kind": counts, "normalisation": "window zero mean, unit variance; "
                "rectangle means"}

    def compute(self, patches: np.ndarray) -> np.ndarray:
        """n x N float32 features of n patches (n x C x H x W or n x H x W)."""
        patches = np.asarray(patches)
        if patches.ndim == 3:
            patches = patches[:, None]
        gray = patches.astype(np.float64).mean(axis=1)
        small = np.stack([resize(g, self.window).astype(np.float64) for g in gray])
        small -= small.mean(axis=(1, 2), keepdims=True)
        std = small.std(axis=(1, 2), keepdims=True)
        small /= np.maximum(std, 1e-6)
        ii = np.zeros((len(small), self.window + 1, self.window + 1))
        ii[:, 1:, 1:] = small.cumsum(1).cumsum(2)
        x, y, w, h, wt = (self.rects[..., i] for i in range(5))
        xi, yi, wi, hi = (a.astype(np.int64) for a in (x, y, w, h))
        sums = (ii[:, yi + hi, xi + wi] - ii[:, yi, xi + wi] - ii[:, yi + hi, xi]
                + ii[:, yi, xi])
        area = np.maximum(w * h, 1.0)
        return (sums * (wt / area)[None]).sum(-1).astype(np.float32)


def _enumerate(window: int, step: int) -> tuple[np.ndarray, list[str]]:
    out, kinds = [], []
    for kind, (uw, uh, parts) in KINDS.items():
        for sw in range(step, window // uw + 1, step):
            for sh in range(step, window // uh + 1, step):
                fw, fh = uw * sw, uh * sh
                for y in range(0, window - fh + 1, step):
                    for x in range(0, window - fw + 1, step):
                        rects = np.zeros((MAX_RECTS, 5))
                        for k, (px, py, pw, ph, wt) in enumerate(parts):
                            rects[k] = (x + px * sw, y + py * sh, pw * sw, ph * sh, wt)
                        out.append(rects)
                        kinds.append(kind)
    return np.array(out), kinds


def lmdb_features(source: Path, out: Path, bank: HaarBank, *, batch: int = 256,
                  progress: bool = True) -> Path:
    """Haar features of every record of an LMDB, in key (= Caffe read) order, into an HDF5
    file with `features`, `label` and `key` (written to a temporary name, then renamed)."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise MissingFileError(f"{source} does not exist (the source is an LMDB directory)")
    if out.exists():
        raise OutputExistsError(f"{out} already exists; it is never overwritten")
    env = open_lmdb(source)     # not an LMDB, or a damaged one: an InputError naming it
    n = env.stat()["entries"]
    env.close()
    pbar = bar(n, "Haar features", enabled=progress, unit="record")
    try:
        with io.atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
            feats = f.create_dataset("features", (n, len(bank)), dtype=np.float32)
            labels = f.create_dataset("label", (n,), dtype=np.float32)
            keys = []
            pending, start = [], 0
            for i, (key, image, label) in enumerate(read_lmdb(source)):
                pending.append(image)
                keys.append(key)
                labels[i] = label
                if len(pending) == batch or i == n - 1:
                    feats[start:start + len(pending)] = bank.compute(np.stack(pending))
                    start += len(pending)
                    pbar.update(len(pending))
                    pending = []
            f.create_dataset("key", data=np.array(keys))
            for k, v in bank.describe().items():
                f.attrs[k] = str(v)
    finally:
        pbar.close()
    return out
