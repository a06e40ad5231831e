"""Free-response ROC (FROC) analysis: sensitivity against false positives per group.

A group is the unit the false positives are counted per: a patient (Shin et al. 2016, Table
II: "TPR at 3 FP per patient") or a volume (Tajbakhsh et al. 2016, PE detection).

Hit rule and counting (the LUNA16 evaluation convention, PROTOCOLS.md "FROC conventions"):
- A candidate hits a lesion when it lies within the lesion's radius of the lesion's centre
  (`hits_within_radius`, distance <= radius, same group only); a candidate within reach of
  several lesions is assigned to the nearest centre. Callers with their own links (e.g. the
  TCIA `grtIDs`) pass lesion ids directly.
- Each lesion counts once, as a true positive at its best-scoring hit; other hits on the same
  lesion are neither true nor false positives. Every candidate that hits no lesion is a false
  positive. Lesions no candidate hits stay in the denominator (sensitivity < 1 at any
  threshold).
- A candidate is accepted when its score >= the threshold; the curve has a point at every
  distinct score, starting at (0, 0) for threshold +inf. x = false positives / number of
  groups (groups without candidates count), y = detected lesions / all lesions.

Summaries
- `sensitivity_at(fp)`: linear interpolation between operating points (as the LUNA16 script
  does), or "step" (the best operating point with FP rate <= fp); see `_curves.value_at`.
- `average_sensitivity()`: mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP per group.
- `area(max_fp)`: trapezoidal area under the curve over [0, max_fp] divided by max_fp (so it
  lies in [0, 1]); the curve is held flat past its last point.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from medtl.metrics import _validate as v
from medtl.metrics._curves import Sweep, area_to, value_at
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

NO_LESION = -1
SHIN_FP_RATE = paper(3.0, "Shin et al. 2016, Table II: TPR at 3 false positives per patient")
LUNA16_FP_RATES = paper((0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                        "LUNA16 evaluation (Setio et al. 2017): average sensitivity at 1/8, "
                        "1/4, 1/2, 1, 2, 4 and 8 FP per scan (PROTOCOLS.md, FROC conventions)")
INTERPOLATION = assumed("linear", "Shin and Tajbakhsh do not say how the sensitivity at 3 FP "
                                  "is read off the curve; linear, as in the LUNA16 evaluation")
AREA_MAX_FP = assumed(8.0, "Shin et al. 2016 report an 'area under the FROC curve' without its "
                           "FP range or normalisation; [0, 8] FP per group, the LUNA16 range, "
                           "divided by 8")
FP_GRID = np.linspace(0.0, 8.0, 161)


@dataclass(frozen=True)
class FrocCurve:
    fp_per_group: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray       # first is +inf (nothing accepted)
    n_groups: int
    n_lesions: int

    def sensitivity_at(self, fp: float | Sequence[float],
                       interpolation: str = INTERPOLATION.value) -> np.ndarray:
        at = np.atleast_1d(np.asarray(fp, dtype=float))
        return value_at(self.fp_per_group, self.sensitivity, at, interpolation, "fp")

    def average_sensitivity(self, fp_rates: Sequence[float] = LUNA16_FP_RATES.value,
                            interpolation: str = INTERPOLATION.value) -> float:
        return float(self.sensitivity_at(fp_rates, interpolation).mean())

    def area(self, max_fp: float = AREA_MAX_FP.value) -> float:
        """Area under the curve over [0, max_fp] FP per group, divided by max_fp."""
        if not np.isfinite(max_fp) or max_fp <= 0:
            raise v.MetricInputError(f"max_fp: expected a positive FP rate, got {max_fp}")
        return area_to(self.fp_per_group, self.sensitivity, float(max_fp)) / float(max_fp)


@dataclass(frozen=True)
class FrocBootstrap:
    """The point curve with bootstrap intervals (groups resampled with replacement)."""

    curve: FrocCurve
    sensitivity: dict[float, Interval]   # FP rate -> sensitivity interval
    average_sensitivity: Interval        # over LUNA16_FP_RATES (or the fp_rates given)
    area: Interval                       # normalised over [0, max_fp]
    max_fp: float
    fp_grid: np.ndarray
    sensitivity_grid: np.ndarray         # point estimate on fp_grid
    band_low: np.ndarray
    band_high: np.ndarray
    n_boot: int
    seed: int
    interpolation: str


@dataclass(frozen=True)
class _Events:
    """Per-lesion best hits (true positives) and false positives, with group indices."""

    scores: np.ndarray
    is_tp: np.ndarray
    group: np.ndarray
    lesions: np.ndarray    # lesions per group, one entry per group (anonymous ones last)

    def curve(self, weights: np.ndarray, sweep: Sweep) -> tuple[np.ndarray, np.ndarray]:
        """(fp per group, sensitivity) for group-count weights (replicates, groups)."""
        per_event = weights[..., self.group]
        tp = sweep.cumulative(per_event * self.is_tp)
        fp = sweep.cumulative(per_event * ~self.is_tp)
        n_lesions = weights @ self.lesions
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = tp / np.asarray(n_lesions)[..., None]
        return fp / self.lesions.size, sens


def lesions_per_group(lesion_groups: ArrayLike,
                      groups: Iterable[Hashable] = ()) -> dict[Hashable, int]:
    """Lesion count per group from one group id per lesion; `groups` adds groups with 0."""
    counts: dict[Hashable, int] = dict.fromkeys(groups, 0)
    if len(lesion_groups):
        counts.update(Counter(v.array_1d(lesion_groups, "lesion_groups").tolist()))
    return counts


def hits_within_radius(candidate_positions: ArrayLike, candidate_groups: ArrayLike,
                       lesion_centres: ArrayLike, lesion_radii: ArrayLike,
                       lesion_groups: ArrayLike) -> np.ndarray:
    """Lesion index (into the lesion arrays) hit by each candidate, or NO_LESION (-1).

    A candidate hits a lesion of its own group when its distance to the lesion centre is
    <= the lesion radius (same units, e.g. world mm); of several such lesions, the nearest
    centre wins (ties: the lower index).
    """
    pos = v.finite_floats(candidate_positions, "candidate_positions", ndim=2)
    cgroups = v.array_1d(candidate_groups, "candidate_groups")
    v.same_length(candidate_positions=pos, candidate_groups=cgroups)
    hits = np.full(pos.shape[0], NO_LESION, dtype=int)
    if len(lesion_groups) == 0:
        return hits
    centres = v.finite_floats(lesion_centres, "lesion_centres", ndim=2)
    radii = v.finite_floats(lesion_radii, "lesion_radii")
    lgroups = v.array_1d(lesion_groups, "lesion_groups")
    v.same_length(lesion_centres=centres, lesion_radii=radii, lesion_groups=lgroups)
    if centres.shape[1] != pos.shape[1]:
        raise v.MetricInputError(f"lesion_centres: {centres.shape[1]} coordinates per lesion "
                                 f"but candidate_positions have {pos.shape[1]}")
    if (radii <= 0).any():
        i = int(np.flatnonzero(radii <= 0)[0])
        raise v.MetricInputError(f"lesion_radii: must be > 0, got {radii[i]} at index {i}")
    for group in np.unique(lgroups):
        cands = np.flatnonzero(cgroups == group)
        lesions = np.flatnonzero(lgroups == group)
        if cands.size == 0:
            continue
        dist = np.linalg.norm(pos[cands, None, :] - centres[None, lesions, :], axis=2)
        within = dist <= radii[lesions][None, :]
        nearest = np.argmin(np.where(within, dist, np.inf), axis=1)
        hit = within.any(axis=1)
        hits[cands[hit]] = lesions[nearest[hit]]
    return hits


def _events(scores: ArrayLike, groups: ArrayLike, lesion_ids: ArrayLike,
            lesions_per_group: Mapping[Hashable, int], n_groups: int | None) -> _Events:
    s = v.scores_1d(scores)
    g = v.array_1d(groups, "groups")
    lesion = v.array_1d(lesion_ids, "lesion_ids")
    v.same_length(scores=s, groups=g, lesion_ids=lesion)
    if not np.issubdtype(lesion.dtype, np.integer):
        raise v.MetricInputError(f"lesion_ids: expected integers (-1 = no lesion), "
                                 f"got dtype {lesion.dtype}")
    if (lesion < NO_LESION).any():
        raise v.MetricInputError("lesion_ids: negative ids other than -1 (no lesion)")
    if not lesions_per_group:
        raise v.MetricInputError("lesions_per_group: empty; give every group (0 for a group "
                                 "without lesions)")
    named = list(lesions_per_group)
    counts = np.array([lesions_per_group[k] for k in named])
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise v.MetricInputError("lesions_per_group: counts must be integers >= 0")
    total_groups = len(named) if n_groups is None else v.positive_int(n_groups, "n_groups")
    if total_groups < len(named):
        raise v.MetricInputError(f"n_groups: {total_groups} is fewer than the "
                                 f"{len(named)} groups in lesions_per_group")
    if counts.sum() == 0:
        raise v.MetricInputError("lesions_per_group: no lesions, sensitivity is undefined")

    slot = {key: i for i, key in enumerate(named)}
    missing = [x for x in dict.fromkeys(g.tolist()) if x not in slot]
    if missing:
        raise v.MetricInputError(f"groups: {missing[0]!r} has candidates but no entry in "
                                 f"lesions_per_group (give 0 for a group without lesions)")
    group_index = np.array([slot[x] for x in g.tolist()])

    fp = lesion == NO_LESION
    hit = np.flatnonzero(~fp)
    best: dict[tuple[int, int], int] = {}
    for i in hit[np.argsort(-s[hit], kind="mergesort")]:
        best.setdefault((int(group_index[i]), int(lesion[i])), int(i))
    found = Counter(key[0] for key in best)
    for gi, n_found in found.items():
        if n_found > counts[gi]:
            raise v.MetricInputError(f"lesion_ids: group {named[gi]!r} has hits on {n_found} "
                                     f"distinct lesions but lesions_per_group says {counts[gi]}")
    keep = np.r_[np.flatnonzero(fp), np.array(sorted(best.values()), dtype=int)]
    lesions = np.r_[counts, np.zeros(total_groups - len(named), dtype=int)].astype(float)
    return _Events(s[keep], ~fp[keep], group_index[keep], lesions)


def froc_curve(scores: ArrayLike, groups: ArrayLike, lesion_ids: ArrayLike,
               lesions_per_group: Mapping[Hashable, int],
               n_groups: int | None = None) -> FrocCurve:
    """The FROC curve (hit rule and counting in the module docstring).

    scores: one per candidate; groups: the candidate's patient/volume id; lesion_ids: the
    lesion the candidate hits (an id unique within its group) or NO_LESION (-1);
    lesions_per_group: every group's lesion count (0 allowed), including groups without
    candidates; n_groups: the number of groups FP rates are divided by, when it exceeds the
    groups listed (extra groups have no candidates and no lesions).
    """
    events = _events(scores, groups, lesion_ids, lesions_per_group, n_groups)
    return _point_curve(events, Sweep.of(events.scores))


def _point_curve(events: _Events, sweep: Sweep) -> FrocCurve:
    fp, sens = events.curve(np.ones(events.lesions.size), sweep)
    return FrocCurve(fp, sens, np.r_[np.inf, sweep.thresholds], events.lesions.size,
                     int(events.lesions.sum()))


def froc_bootstrap(scores: ArrayLike, groups: ArrayLike, lesion_ids: ArrayLike,
                   lesions_per_group: Mapping[Hashable, int], n_groups: int | None = None, *,
                   fp_rates: Sequence[float] = (SHIN_FP_RATE.value,),
                   average_fp_rates: Sequence[float] = LUNA16_FP_RATES.value,
                   max_fp: float = AREA_MAX_FP.value, fp_grid: ArrayLike | None = None,
                   n_boot: int = N_BOOT.value, seed: int = SEED.value,
                   level: float = CONFIDENCE_LEVEL.value,
                   interpolation: str = INTERPOLATION.value) -> FrocBootstrap:
    """The FROC curve with percentile bootstrap intervals (groups resampled with replacement,
    all n_groups of them per replicate; replicates that draw no lesion are skipped) for the
    sensitivity at `fp_rates`, the average sensitivity over `average_fp_rates`, the area
    normalised over [0, max_fp], and a pointwise band on `fp_grid` (default 0..8 by 0.05)."""
    events = _events(scores, groups, lesion_ids, lesions_per_group, n_groups)
    level = v.probability_level(level)
    grid = FP_GRID if fp_grid is None else v.finite_floats(fp_grid, "fp_grid")
    rates = v.finite_floats(fp_rates, "fp_rates")
    averaged = v.finite_floats(average_fp_rates, "average_fp_rates")
    for name, values in (("fp_rates", rates), ("average_fp_rates", averaged), ("fp_grid", grid)):
        if (values < 0).any():
            raise v.MetricInputError(f"{name}: FP rates must be >= 0")
    sweep = Sweep.of(events.scores)
    point = _point_curve(events, sweep)
    point_area = point.area(max_fp)
    point_sens = point.sensitivity_at(rates, interpolation)

    sens, avg, area, band = [], [], [], []
    for counts in resample_counts(events.lesions.size, n_boot, seed):
        fps, senss = events.curve(counts, sweep)
        for fp, se in zip(fps, senss, strict=True):
            if not np.isfinite(se[-1]):
                sens.append(np.full(rates.size, np.nan))
                avg.append(np.nan)
                area.append(np.nan)
                band.append(np.full(grid.size, np.nan))
                continue
            sens.append(value_at(fp, se, rates, interpolation))
            avg.append(value_at(fp, se, averaged, interpolation).mean())
            area.append(area_to(fp, se, max_fp) / max_fp)
            band.append(value_at(fp, se, grid, interpolation))
    sens_reps = np.array(sens)
    low, high = percentile_band(np.array(band), level)
    return FrocBootstrap(
        curve=point,
        sensitivity={float(f): percentile_interval(point_sens[i], sens_reps[:, i], level)
                     for i, f in enumerate(rates)},
        average_sensitivity=percentile_interval(
            point.average_sensitivity(averaged, interpolation), np.array(avg), level),
        area=percentile_interval(point_area, np.array(area), level),
        max_fp=float(max_fp), fp_grid=grid,
        sensitivity_grid=point.sensitivity_at(grid, interpolation),
        band_low=low, band_high=high, n_boot=int(n_boot), seed=int(seed),
        interpolation=interpolation)
