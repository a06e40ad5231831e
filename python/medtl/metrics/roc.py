"""Candidate-level ROC analysis: curve, AUC, DeLong variance and test, bootstrap intervals.

Conventions
- A candidate is called positive when its score >= the threshold; tied scores move together,
  so the AUC counts a tied positive/negative pair as 1/2 (equal to scikit-learn's
  `roc_auc_score`, and to the trapezoidal area under the full curve).
- The sensitivity at a false-positive rate f is read off the curve with `value_at` (see
  `_curves`): the top of a vertical segment at exactly f, else linear interpolation between
  the neighbouring operating points (or the step value, on request).
- DeLong et al. 1988 variance via midranks (Sun & Xu 2014); the interval is the normal
  approximation AUC +- z * sd, clipped to [0, 1].
- Bootstrap: resample patients (groups) when `groups` is given, else candidates (see
  `bootstrap`); a replicate without both classes is invalid and skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from medtl.metrics import _validate as v
from medtl.metrics._curves import Sweep, value_at
from medtl.metrics.bootstrap import (
    CONFIDENCE_LEVEL,
    N_BOOT,
    SEED,
    Interval,
    percentile_band,
    percentile_interval,
    resample_counts,
)
from medtl.provenance import assumed, paper


def _stats():
    """scipy.stats, imported on first use: it costs ~1 s, which every `medtl` command would
    pay at start-up otherwise."""
    from scipy import stats

    return stats

OPERATING_FPRS = paper((0.10, 0.15, 0.20),
                       "Tajbakhsh et al. 2016, frame classification: ROC operating points at "
                       "10%, 15% and 20% false positive rate")
INTERPOLATION = assumed("linear", "the papers do not say how an operating point between two "
                                  "thresholds is read; linear, as in the LUNA16 evaluation")
FPR_GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class RocCurve:
    """Operating points at every distinct score, first point (0, 0) at threshold +inf."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def sensitivity_at(self, fpr: float | Sequence[float],
                       interpolation: str = INTERPOLATION.value) -> np.ndarray:
        at = np.atleast_1d(np.asarray(fpr, dtype=float))
        if (at > 1).any():
            raise v.MetricInputError(f"fpr: false-positive rates must lie in [0, 1], got {fpr}")
        return value_at(self.fpr, self.tpr, at, interpolation, "fpr")

    def auc(self) -> float:
        return float(np.trapezoid(self.tpr, self.fpr))


@dataclass(frozen=True)
class DelongAuc:
    auc: float
    variance: float
    interval: Interval


@dataclass(frozen=True)
class DelongTest:
    """DeLong's test of two correlated AUCs (same candidates, two scorers)."""

    auc_a: float
    auc_b: float
    difference: float          # auc_a - auc_b
    variance: float            # of the difference
    z: float
    p_value: float             # two-sided
    interval: Interval         # of the difference


@dataclass(frozen=True)
class RocBootstrap:
    """Bootstrap intervals for the AUC, the operating points, and a pointwise curve band."""

    auc: Interval
    sensitivity: dict[float, Interval]   # FPR -> sensitivity interval
    auc_replicates: np.ndarray           # NaN for an invalid replicate
    fpr_grid: np.ndarray
    tpr: np.ndarray                      # point estimate on fpr_grid
    band_low: np.ndarray
    band_high: np.ndarray
    resampled: str                       # "groups" or "candidates"
    n_boot: int
    seed: int
    interpolation: str


def _checked(labels: ArrayLike, scores: ArrayLike,
             scores_name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    y = v.binary_labels(labels)
    s = v.scores_1d(scores, scores_name)
    v.same_length(labels=y, **{scores_name: s})
    v.both_classes(y)
    return y, s


def _curve(y: np.ndarray, sweep: Sweep, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) for (replicates, items) or (items,) weights; NaN where a class is absent."""
    tp = sweep.cumulative(weights * y)
    fp = sweep.cumulative(weights * ~y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return fp / fp[..., -1:], tp / tp[..., -1:]


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> RocCurve:
    """Every operating point (scikit-learn's `roc_curve(..., drop_intermediate=False)`)."""
    y, s = _checked(labels, scores)
    sweep = Sweep.of(s)
    fpr, tpr = _curve(y, sweep, np.ones(s.size))
    return RocCurve(fpr, tpr, np.r_[np.inf, sweep.thresholds])


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney; tied pairs count 1/2)."""
    y, s = _checked(labels, scores)
    return _mann_whitney(s[y], s[~y])


def _mann_whitney(pos: np.ndarray, neg: np.ndarray) -> float:
    ranks = _stats().rankdata(np.r_[pos, neg])
    m, n = pos.size, neg.size
    return float((ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n))


def sensitivity_at_fpr(labels: ArrayLike, scores: ArrayLike,
                       fprs: Sequence[float] = OPERATING_FPRS.value,
                       interpolation: str = INTERPOLATION.value) -> dict[float, float]:
    """Sensitivity (TPR) at each false-positive rate."""
    values = roc_curve(labels, scores).sensitivity_at(fprs, interpolation)
    return {float(f): float(t) for f, t in zip(fprs, values, strict=True)}


def _delong_components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """AUCs and structural components for (scorers, m) positive and (scorers, n) negative
    scores: V10 (per positive: fraction of negatives below, ties 1/2) and V01 (per negative:
    fraction of positives above)."""
    m, n = pos.shape[1], neg.shape[1]
    within_pos = _stats().rankdata(pos, axis=1)
    within_neg = _stats().rankdata(neg, axis=1)
    overall = _stats().rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (overall[:, :m] - within_pos) / n
    v01 = 1.0 - (overall[:, m:] - within_neg) / m
    return v10.mean(axis=1), v10, v01


def _delong_covariance(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise v.MetricInputError(f"labels: DeLong needs at least 2 positives and 2 negatives, "
                                 f"got {m} and {n}")
    aucs, v10, v01 = _delong_components(pos, neg)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n


def _z(level: float) -> float:
    return float(_stats().norm.ppf(0.5 + v.probability_level(level) / 2.0))


def delong_auc(labels: ArrayLike, scores: ArrayLike,
               level: float = CONFIDENCE_LEVEL.value) -> DelongAuc:
    """AUC with DeLong's variance and normal-approximation interval (clipped to [0, 1])."""
    y, s = _checked(labels, scores)
    aucs, cov = _delong_covariance(s[y][None, :], s[~y][None, :])
    auc, var = float(aucs[0]), float(cov[0, 0])
    half = _z(level) * np.sqrt(var)
    interval = Interval(auc, float(max(0.0, auc - half)), float(min(1.0, auc + half)), level,
                        "delong")
    return DelongAuc(auc, var, interval)


def delong_test(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike,
                level: float = CONFIDENCE_LEVEL.value) -> DelongTest:
    """DeLong's test that two scorers of the same candidates have equal AUC."""
    y, a = _checked(labels, scores_a, "scores_a")
    b = v.scores_1d(scores_b, "scores_b")
    v.same_length(labels=y, scores_b=b)
    pos = np.stack([a[y], b[y]])
    neg = np.stack([a[~y], b[~y]])
    aucs, cov = _delong_covariance(pos, neg)
    diff = float(aucs[0] - aucs[1])
    var = float(max(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1], 0.0))
    if var > 0:
        z = diff / np.sqrt(var)
        p = float(2.0 * _stats().norm.sf(abs(z)))
    else:  # identical rankings: no spread, the AUCs differ only if the difference is real
        z = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
        p = 1.0 if diff == 0 else 0.0
    half = _z(level) * np.sqrt(var)
    interval = Interval(diff, float(diff - half), float(diff + half), level, "delong")
    return DelongTest(float(aucs[0]), float(aucs[1]), diff, var, float(z), p, interval)


def roc_bootstrap(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike | None = None, *,
                  fprs: Sequence[float] = OPERATING_FPRS.value,
                  fpr_grid: ArrayLike | None = None,
                  n_boot: int = N_BOOT.value, seed: int = SEED.value,
                  level: float = CONFIDENCE_LEVEL.value,
                  interpolation: str = INTERPOLATION.value) -> RocBootstrap:
    """Bootstrap intervals for the AUC and the sensitivity at `fprs`, and a pointwise band of
    the sensitivity on `fpr_grid` (default 0, 0.01, ..., 1) for plotting.

    `groups` (patient id per candidate) makes the patient the resampling unit; without it
    candidates are resampled. Two calls with the same labels, groups, n_boot and seed draw the
    same resamples, so their replicates are paired (e.g. to compare two scorers).
    """
    y, s = _checked(labels, scores)
    level = v.probability_level(level)
    if groups is None:
        group_of, n_groups, unit = np.arange(s.size), s.size, "candidates"
    else:
        ids, group_of = v.group_index(groups)
        v.same_length(labels=y, groups=group_of)
        n_groups, unit = ids.size, "groups"
    grid = FPR_GRID if fpr_grid is None else v.finite_floats(fpr_grid, "fpr_grid")
    fpr_points = v.finite_floats(fprs, "fprs")
    for name, values in (("fprs", fpr_points), ("fpr_grid", grid)):
        if ((values < 0) | (values > 1)).any():
            raise v.MetricInputError(f"{name}: false-positive rates must lie in [0, 1]")

    sweep = Sweep.of(s)
    point = roc_curve(y, s)
    point_sens = point.sensitivity_at(fpr_points, interpolation)
    aucs, sens, band = [], [], []
    for counts in resample_counts(n_groups, n_boot, seed):
        fpr, tpr = _curve(y, sweep, counts[:, group_of])
        aucs.append(np.trapezoid(tpr, fpr, axis=1))
        for f, t in zip(fpr, tpr, strict=True):
            if np.isnan(f[-1]) or np.isnan(t[-1]):
                sens.append(np.full(fpr_points.size, np.nan))
                band.append(np.full(grid.size, np.nan))
            else:
                sens.append(value_at(f, t, fpr_points, interpolation))
                band.append(value_at(f, t, grid, interpolation))
    auc_reps, sens_reps, band_reps = np.concatenate(aucs), np.array(sens), np.array(band)
    low, high = percentile_band(band_reps, level)
    return RocBootstrap(
        auc=percentile_interval(point.auc(), auc_reps, level), auc_replicates=auc_reps,
        sensitivity={float(f): percentile_interval(point_sens[i], sens_reps[:, i], level)
                     for i, f in enumerate(fpr_points)},
        fpr_grid=grid, tpr=point.sensitivity_at(grid, interpolation),
        band_low=low, band_high=high, resampled=unit, n_boot=int(n_boot), seed=int(seed),
        interpolation=interpolation)
