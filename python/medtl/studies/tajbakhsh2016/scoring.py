"""Scoring Tajbakhsh 2016's four applications as the paper does, with 95% intervals.

- polyp detection (Sec. VI-A, Fig. 2): FROC of the candidates' scores (a candidate's score is
  the mean probability over its patches); a lesion is one polyp in one frame;
- PE detection (Sec. VI-B, Fig. 4): FROC per volume; a lesion is one embolus;
- frame classification (Sec. VI-C, Fig. 6): ROC, AUC with DeLong and bootstrap intervals,
  sensitivity at 10%, 15%, 20% false-positive rate with bootstrap intervals;
- intima-media interfaces (Sec. VI-D, Fig. 9): per interface, the mean distance between the
  snake and the expert's trace per ROI, box-plot statistics (Tukey whiskers) over the ROIs.

Curves differ at an operating point when their 95% intervals do not overlap (the paper's
rule, `medtl.metrics.differ`). The paper computes its intervals by Edwards et al.'s
maximum-likelihood fit; the kit bootstraps (`medtl.metrics.BOOTSTRAP_METHOD`, assumed).

Each application's scoring choices are strict options under `dataset.options.adapter` of a
spec (classes below), every default with its source or its "assumed" reason.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtl.config import option
from medtl.metrics import (
    N_BOOT,
    OPERATING_FPRS,
    SEED,
    box_stats,
    delong_auc,
    froc_bootstrap,
    roc_bootstrap,
    roc_curve,
)
from medtl.metrics.bootstrap import CONFIDENCE_LEVEL, percentile_interval, resample_counts
from medtl.provenance import assumed, paper
from medtl.studies.tajbakhsh2016.boundaries import SnakeParams

POLYP_HIT_RULE = ("a polyp is one connected region (8-connected) of a frame's ground-truth "
                  "mask; a positive candidate hits the region holding its box centre (the "
                  "nearest region when its label was given and its centre lies outside the "
                  "mask; the frame's one polyp when the manifest has no masks); each polyp "
                  "counts once, at its best-scoring hit; every negative candidate is a false "
                  "positive")
PE_HIT_RULE = ("the candidate manifest names no embolus: the positive candidates of one "
               "patient closer than link_mm (single linkage) are one PE; each PE counts "
               "once, at its best-scoring candidate; every negative candidate is a false "
               "positive")


# ------------------------------------------------------------------ options

@dataclass(frozen=True)
class AdapterOptions:
    """Options every Tajbakhsh adapter reads (not the dataset builder's)."""

    n_boot: int = option(N_BOOT.value, "bootstrap replicates of every interval", N_BOOT)
    bootstrap_seed: int = option(SEED.value, "seed of the bootstrap", SEED)
    single_group_fraction: float | None = option(
        None, "a data fraction that selects the one-group training set (single_group: true "
        "in the builder's options), e.g. 0.08 for one of ~12 training patients")

    def __post_init__(self) -> None:
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be at least 1, got {self.n_boot}")
        f = self.single_group_fraction
        if f is not None and not 0 < f < 1:
            raise ValueError(f"single_group_fraction must lie in (0, 1), got {f}")


@dataclass(frozen=True)
class PolypOptions(AdapterOptions):
    fp_unit: str = option(
        "frame", "false positives counted per frame or per video",
        assumed("frame", "Sec. VI-A does not name the FROC's unit; the handcrafted system "
                "whose candidates it uses (ref. [42]) is evaluated per frame, and the data "
                "are counted in frames (3,800 + 15,100 training frames)"),
        choices=("frame", "video"))
    fp_rates: list[float] = option(
        [0.01, 0.05, 0.1], "operating points (false positives per unit) of the table",
        assumed([0.01, 0.05, 0.1], "Table S1 compares the curves at three operating points "
                "the text does not give; low rates per frame, where the paper says the curves "
                "differ most"))
    max_fp: float = option(0.5, "right end of the FROC plot and of its normalised area",
                           assumed(0.5, "not given; the low-FP range the paper discusses"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fp(self.fp_rates, self.max_fp)


@dataclass(frozen=True)
class PeOptions(AdapterOptions):
    fp_rates: list[float] = option(
        [1.0, 2.0, 3.0], "operating points (false positives per volume) of the table",
        assumed([1.0, 2.0, 3.0], "Sec. VI-B names 3 FP per volume; 1 and 2 are added to show "
                "the curve's low end"))
    max_fp: float = option(8.0, "right end of the FROC plot and of its normalised area",
                           assumed(8.0, "not given; the LUNA16 range 0-8 FP per scan"))
    link_mm: float = option(
        5.0, "positive candidates of a patient closer than this are one PE (0: each its own)",
        assumed(5.0, "the manifest names no embolus; the paper's 687 true candidates on 326 "
                "PEs (Sec. VI-B) are about 2 per PE, cast within one clot"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fp(self.fp_rates, self.max_fp)
        if self.link_mm < 0:
            raise ValueError(f"link_mm must be >= 0, got {self.link_mm}")


@dataclass(frozen=True)
class FramesOptions(AdapterOptions):
    fprs: list[float] = option(list(OPERATING_FPRS.value), "ROC operating points (FPR)",
                               paper(list(OPERATING_FPRS.value), OPERATING_FPRS.source))
    bootstrap_unit: str = option(
        "frame", "bootstrap resampling unit: frame or video",
        assumed("frame", "the paper's 2,000 test frames come from about 3 videos, too few to "
                "resample"), choices=("frame", "video"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.fprs or any(not 0 < f < 1 for f in self.fprs):
            raise ValueError(f"fprs must be rates in (0, 1), got {self.fprs}")


@dataclass(frozen=True)
class ImtOptions(AdapterOptions):
    dense_batch: int = option(256, "patches per forward pass when the net is applied at "
                                   "every ROI pixel (speed only)")
    pixel_size: float = option(1.0, "size of a pixel in the unit errors are reported in",
                               assumed(1.0, "the manifest has no pixel spacing: errors are in "
                                       "pixels"))
    snake: SnakeParams = option(SnakeParams(), "the open snakes' parameters "
                                               "(medtl.studies.tajbakhsh2016.boundaries)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dense_batch < 1 or self.pixel_size <= 0:
            raise ValueError("dense_batch must be >= 1 and pixel_size > 0")


def _check_fp(rates: Sequence[float], max_fp: float) -> None:
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"fp_rates must be positive, got {list(rates)}")
    if max_fp <= 0 or max_fp < max(rates):
        raise ValueError(f"max_fp must be positive and >= every fp_rate, got {max_fp}")


OPTIONS = {"polyp": PolypOptions, "pe": PeOptions, "frames": FramesOptions,
           "imt": ImtOptions}


# ------------------------------------------------------------------ detection (FROC)

def _key(rate: float) -> str:
    return f"{rate:g}"


def score_froc(rows: Sequence[Mapping[str, Any]], *, unit_column: str,
               lesions_per_unit: Mapping[Hashable, int], fp_rates: Sequence[float],
               max_fp: float, n_boot: int, seed: int) -> dict[str, Any]:
    """FROC of per-candidate rows (`score`, `label`, `lesion`: "" for none, and the unit
    false positives are counted per), with bootstrap intervals over the units."""
    scores = np.array([float(r["score"]) for r in rows])
    units = np.array([str(r[unit_column]) for r in rows])
    numbering: dict[tuple[str, str], int] = {}
    lesion_ids = np.array([
        numbering.setdefault((str(r[unit_column]), str(r["lesion"])), len(numbering))
        if str(r["lesion"]) != "" else -1 for r in rows], dtype=int)
    grid = np.linspace(0.0, max_fp, 101)
    froc = froc_bootstrap(scores, units, lesion_ids, dict(lesions_per_unit),
                          fp_rates=tuple(fp_rates), max_fp=max_fp, fp_grid=grid,
                          n_boot=n_boot, seed=seed)
    labels = np.array([int(r["label"]) for r in rows])
    auc = (delong_auc(labels, scores).interval.to_dict()
           if 1 < labels.sum() < len(labels) - 1 else None)
    return {
        "sensitivity": {_key(f): i.to_dict() for f, i in froc.sensitivity.items()},
        "froc_area": froc.area.to_dict(),
        "max_fp": max_fp,
        "froc_curve": {"fp": froc.curve.fp_per_group.tolist(),
                       "sensitivity": froc.curve.sensitivity.tolist()},
        "froc_band": {"fp": grid.tolist(), "sensitivity": froc.sensitivity_grid.tolist(),
                      "low": froc.band_low.tolist(), "high": froc.band_high.tolist()},
        "candidate_roc_auc": auc,
        "candidates": len(rows), "positives": int(labels.sum()),
        "lesions": int(sum(lesions_per_unit.values())), "units": len(lesions_per_unit),
        "n_boot": n_boot, "bootstrap_seed": seed, "interpolation": froc.interpolation,
    }


def score_polyp(rows: Sequence[Mapping[str, Any]], options: PolypOptions) -> dict[str, Any]:
    """Rows carry `frame`, `group` (video), `lesion` and `frame_lesions` (the polyps of the
    candidate's frame); false positives per frame or per video."""
    per_frame: dict[str, int] = {}
    video_of: dict[str, str] = {}
    for r in rows:
        per_frame[str(r["frame"])] = int(r["frame_lesions"])
        video_of[str(r["frame"])] = str(r["group"])
    if options.fp_unit == "frame":
        unit_column, per_unit = "frame", per_frame
    else:
        unit_column, per_unit = "group", {}
        for frame, n in per_frame.items():
            per_unit[video_of[frame]] = per_unit.get(video_of[frame], 0) + n
        # a lesion is still a polyp in a frame: qualify it by frame within its video
        rows = [dict(r, lesion=f"{r['frame']}#{r['lesion']}" if str(r["lesion"]) else "")
                for r in rows]
    out = score_froc(rows, unit_column=unit_column, lesions_per_unit=per_unit,
                     fp_rates=options.fp_rates, max_fp=options.max_fp,
                     n_boot=options.n_boot, seed=options.bootstrap_seed)
    return {"application": "polyp", "fp_unit": options.fp_unit, "hit_rule": POLYP_HIT_RULE,
            "frames": len(per_frame), "videos": len(set(video_of.values())), **out}


def link_lesions(centres: np.ndarray, link_mm: float) -> np.ndarray:
    """Cluster index per point: single linkage at `link_mm` (0: every point its own)."""
    n = len(centres)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if link_mm > 0 and n > 1:
        d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
        for i, j in zip(*np.nonzero(np.triu(d < link_mm, k=1)), strict=True):
            parent[root(int(i))] = root(int(j))
    roots = [root(i) for i in range(n)]
    order = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([order[r] for r in roots], dtype=int)


def score_pe(rows: Sequence[Mapping[str, Any]], options: PeOptions) -> dict[str, Any]:
    """Rows carry `group` (patient = volume), `lesion` and `group_lesions`."""
    per_volume = {str(r["group"]): int(r["group_lesions"]) for r in rows}
    out = score_froc(rows, unit_column="group", lesions_per_unit=per_volume,
                     fp_rates=options.fp_rates, max_fp=options.max_fp,
                     n_boot=options.n_boot, seed=options.bootstrap_seed)
    return {"application": "pe", "fp_unit": "volume", "hit_rule": PE_HIT_RULE,
            "link_mm": options.link_mm, "volumes": len(per_volume), **out}


# ------------------------------------------------------------------ classification (ROC)

def score_frames(rows: Sequence[Mapping[str, Any]], options: FramesOptions) -> dict[str, Any]:
    """ROC of per-frame scores: DeLong and bootstrap AUC intervals, sensitivity at the
    paper's false-positive rates."""
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    groups = (np.array([str(r["group"]) for r in rows])
              if options.bootstrap_unit == "video" else None)
    curve = roc_curve(labels, scores)
    boot = roc_bootstrap(labels, scores, groups, fprs=tuple(options.fprs),
                         n_boot=options.n_boot, seed=options.bootstrap_seed)
    delong = delong_auc(labels, scores) if min(labels.sum(), len(labels) - labels.sum()) > 1 \
        else None
    return {
        "application": "frames",
        "auc_delong": None if delong is None else delong.interval.to_dict(),
        "auc_bootstrap": boot.auc.to_dict(),
        "sensitivity_at_fpr": {_key(f): i.to_dict() for f, i in boot.sensitivity.items()},
        "roc_curve": {"fpr": curve.fpr.tolist(), "tpr": curve.tpr.tolist()},
        "roc_band": {"fpr": boot.fpr_grid.tolist(), "tpr": boot.tpr.tolist(),
                     "low": boot.band_low.tolist(), "high": boot.band_high.tolist()},
        "frames": len(rows), "informative": int(labels.sum()),
        "videos": len({str(r["group"]) for r in rows}),
        "bootstrap_unit": options.bootstrap_unit, "n_boot": options.n_boot,
        "bootstrap_seed": options.bootstrap_seed, "interpolation": boot.interpolation,
    }


# ------------------------------------------------------------------ boundaries

def grouped_mean_interval(values: np.ndarray, groups: Sequence[str], n_boot: int, seed: int
                          ) -> dict[str, Any]:
    """The mean of per-ROI values with a percentile bootstrap interval over subjects."""
    ids = sorted(set(groups))
    index = np.array([ids.index(g) for g in groups])
    reps = []
    for counts in resample_counts(len(ids), n_boot, seed):
        w = counts[:, index]
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append((w @ values) / w.sum(axis=1))
    interval = percentile_interval(float(values.mean()), np.concatenate(reps),
                                   CONFIDENCE_LEVEL.value)
    return interval.to_dict()


def summarise_errors(values: np.ndarray, groups: Sequence[str], n_boot: int, seed: int
                     ) -> dict[str, Any]:
    """Box-plot statistics (Tukey whiskers, Fig. 9) and the mean's interval."""
    b = box_stats(values)
    return {"mean": grouped_mean_interval(values, groups, n_boot, seed),
            "std": b.std, "median": b.median, "q1": b.q1, "q3": b.q3,
            "whisker_low": b.whisker_low, "whisker_high": b.whisker_high,
            "outliers": b.outliers.tolist(), "n": b.n, "per_roi": values.tolist()}
