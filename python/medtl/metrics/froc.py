"""Free-response ROC (FROC) analysis: sensitivity against false positives per group.

A group is the unit the false positives are counted per: a patient (Shin et al. 2016, Table
II: "TPR at 3 FP per patient"), a volume (Tajbakhsh et al. 2016, PE detection) or a scan
(LUNA16). Which candidate hits which lesion is the hit rule (`HIT_RULES`); the study that
scores chooses it, and every report names the one it used.

Hit rules
- "link" (the kit's default; the lymph-node study's TCIA `grtIDs` links): the caller gives
  each candidate the lesion it hits (an id unique within its group) or NO_LESION (-1).
  `hits_within_radius` makes such links from geometry: of the lesions of the candidate's
  group whose centre lies within their radius (distance <= radius), the nearest. Each lesion
  counts once, as a true positive at its best-scoring hit; other hits on it are neither true
  nor false positives; every candidate that hits no lesion is a false positive. A set in which
  no candidate hits a lesion has sensitivity 0.
- "luna16": the LUNA16 evaluation script (noduleCADEvaluationLUNA16.py of the LUNA16
  challenge, Setio et al. 2017), reproduced by `luna16_marks`:
  1. a scan with more than `max_marks` (100) marks keeps only those scoring strictly above
     its (max_marks + 1)-th highest score (marks tied at that score all go);
  2. a mark hits a finding when its squared distance to the finding's centre is strictly
     less than (diameter / 2)^2; a negative diameter counts as 10 mm;
  3. a mark counts for every included finding it hits (inside two overlapping findings: for
     both); each finding is a true positive at its best-scoring hit, other hits on it are
     neither true nor false positives;
  4. a mark on excluded ("irrelevant") findings only is neither a true nor a false positive;
     every other mark is a false positive;
  5. when no finding is hit at all, every sensitivity is NaN (the script's ROC has no
     positive and scikit-learn returns NaN rates), not 0.
  Not reproduced: the script's bootstrap (unseeded, mean curve); the kit's seeded percentile
  bootstrap below is used with both rules. The script ignores marks and findings of scans
  outside its scan list and stops on a set without marks; the kit raises an error for both.

Counting (both rules)
- Lesions no candidate hits stay in the denominator (sensitivity < 1 at any threshold).
- A candidate is accepted when its score >= the threshold; the curve has a point at every
  distinct score, starting at (0, 0) for threshold +inf (the LUNA16 script's scikit-learn
  ROC gives the same points less collinear ones). x = false positives / number of groups
  (groups without candidates count), y = detected lesions / all lesions.

Summaries
- `sensitivity_at(fp)`: linear interpolation between operating points (as the LUNA16 script
  does with np.interp), or "step" (the best operating point with FP rate <= fp); see
  `_curves.value_at`.
- `average_sensitivity()`: mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP per group.
- `area(max_fp)`: trapezoidal area under the curve over [0, max_fp] divided by max_fp (so it
  lies in [0, 1]); the curve is held flat past its last point.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
HIT_RULES = {
    "link": "each candidate hits the lesion it is linked to (or none); each lesion counts "
            "once, at its best-scoring hit; other hits on it are neither TP nor FP",
    "luna16": "the LUNA16 evaluation (noduleCADEvaluationLUNA16.py): at most 100 marks per "
              "scan; a mark hits every finding whose centre is closer than the finding's "
              "radius (strict); each finding counts once, at its best-scoring hit; marks on "
              "excluded findings are neither TP nor FP; no finding hit gives NaN",
}
LUNA16_MAX_MARKS = paper(100, "LUNA16 evaluation script (noduleCADEvaluationLUNA16.py): "
                              "maxNumberOfCADMarks=100 per scan")
LUNA16_UNKNOWN_DIAMETER = paper(10.0, "LUNA16 evaluation script: a finding whose diameter is "
                                      "negative (unknown) is given 10 mm")


@dataclass(frozen=True)
class FrocCurve:
    fp_per_group: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray       # first is +inf (nothing accepted)
    n_groups: int
    n_lesions: int
    rule: str = "link"           # the hit rule (HIT_RULES) the candidates were matched by

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
    rule: str

    def curve(self, weights: np.ndarray, sweep: Sweep) -> tuple[np.ndarray, np.ndarray]:
        """(fp per group, sensitivity) for group-count weights (replicates, groups)."""
        per_event = weights[..., self.group]
        tp = sweep.cumulative(per_event * self.is_tp)
        fp = sweep.cumulative(per_event * ~self.is_tp)
        n_lesions = weights @ self.lesions
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = tp / np.asarray(n_lesions)[..., None]
        if self.rule == "luna16":
            sens = np.where(tp[..., -1:] > 0, sens, np.nan)
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
    v.same_length(lesion_centres=lesion_centres, lesion_radii=lesion_radii,
                  lesion_groups=lesion_groups)
    if len(lesion_groups) == 0:
        return hits
    centres = v.finite_floats(lesion_centres, "lesion_centres", ndim=2)
    radii = v.finite_floats(lesion_radii, "lesion_radii")
    lgroups = v.array_1d(lesion_groups, "lesion_groups")
    v.same_kind(candidate_groups=cgroups, lesion_groups=lgroups)
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
            lesions_per_group: Mapping[Hashable, int], n_groups: int | None,
            rule: str) -> _Events:
    if rule not in HIT_RULES:
        raise v.MetricInputError(f"rule: expected one of {sorted(HIT_RULES)}, got {rule!r}")
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
    v.same_kind(groups=g, lesions_per_group=np.array(named, dtype=object))
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
    return _Events(s[keep], ~fp[keep], group_index[keep], lesions, rule)


def froc_curve(scores: ArrayLike, groups: ArrayLike, lesion_ids: ArrayLike,
               lesions_per_group: Mapping[Hashable, int],
               n_groups: int | None = None, *, rule: str = "link") -> FrocCurve:
    """The FROC curve (hit rules and counting in the module docstring).

    scores: one per candidate; groups: the candidate's patient/volume id; lesion_ids: the
    lesion the candidate hits (an id unique within its group) or NO_LESION (-1);
    lesions_per_group: every group's lesion count (0 allowed), including groups without
    candidates; n_groups: the number of groups FP rates are divided by, when it exceeds the
    groups listed (extra groups have no candidates and no lesions); rule: "link", or
    "luna16" for the entries `luna16_marks` returns (`Luna16Marks.curve()`).
    """
    events = _events(scores, groups, lesion_ids, lesions_per_group, n_groups, rule)
    return _point_curve(events, Sweep.of(events.scores))


def _point_curve(events: _Events, sweep: Sweep) -> FrocCurve:
    fp, sens = events.curve(np.ones(events.lesions.size), sweep)
    return FrocCurve(fp, sens, np.r_[np.inf, sweep.thresholds], events.lesions.size,
                     int(events.lesions.sum()), events.rule)


def froc_bootstrap(scores: ArrayLike, groups: ArrayLike, lesion_ids: ArrayLike,
                   lesions_per_group: Mapping[Hashable, int], n_groups: int | None = None, *,
                   fp_rates: Sequence[float] = (SHIN_FP_RATE.value,),
                   average_fp_rates: Sequence[float] = LUNA16_FP_RATES.value,
                   max_fp: float = AREA_MAX_FP.value, fp_grid: ArrayLike | None = None,
                   n_boot: int = N_BOOT.value, seed: int = SEED.value,
                   level: float = CONFIDENCE_LEVEL.value,
                   interpolation: str = INTERPOLATION.value,
                   rule: str = "link") -> FrocBootstrap:
    """The FROC curve with percentile bootstrap intervals (groups resampled with replacement,
    all n_groups of them per replicate; replicates that draw no lesion are skipped, and under
    the luna16 rule also those that detect none) for the sensitivity at `fp_rates`, the
    average sensitivity over `average_fp_rates`, the area normalised over [0, max_fp], and a
    pointwise band on `fp_grid` (default 0..8 by 0.05). Under the luna16 rule a set that
    detects no lesion gives NaN everywhere."""
    events = _events(scores, groups, lesion_ids, lesions_per_group, n_groups, rule)
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
    if not np.isfinite(point.sensitivity[-1]):
        return _undefined_bootstrap(point, rates, grid, float(max_fp), int(n_boot), seed,
                                    level, interpolation)

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


def _undefined_bootstrap(point: FrocCurve, rates: np.ndarray, grid: np.ndarray, max_fp: float,
                         n_boot: int, seed: int, level: float,
                         interpolation: str) -> FrocBootstrap:
    """NaN intervals for a set whose sensitivity is undefined (luna16: nothing detected)."""
    nan = Interval(float("nan"), float("nan"), float("nan"), level, "bootstrap", 0)
    blank = np.full(grid.size, np.nan)
    return FrocBootstrap(curve=point, sensitivity={float(f): nan for f in rates},
                         average_sensitivity=nan, area=nan, max_fp=max_fp, fp_grid=grid,
                         sensitivity_grid=blank, band_low=blank, band_high=blank.copy(),
                         n_boot=n_boot, seed=int(seed), interpolation=interpolation)


# ------------------------------------------------------------------ the LUNA16 rule

@dataclass(frozen=True)
class Luna16Marks:
    """Marks matched to findings by the LUNA16 rule (module docstring): the entries its FROC
    counts. A mark inside k included findings gives k entries; marks dropped by the cap and
    marks on excluded findings only give none."""

    scores: np.ndarray
    groups: np.ndarray                       # the entry's scan
    lesion_ids: np.ndarray                   # index into the included findings, or NO_LESION
    mark: np.ndarray                         # the entry's index into the marks given
    lesions_per_group: dict[Hashable, int]   # included findings of every scan
    capped: int                              # marks dropped by max_marks
    irrelevant: int                          # marks on excluded findings only
    double_hits: int                         # hits on a finding beyond its first (the script's
                                             # "double detections")

    def curve(self) -> FrocCurve:
        return froc_curve(self.scores, self.groups, self.lesion_ids, self.lesions_per_group,
                          rule="luna16")

    def bootstrap(self, **options: Any) -> FrocBootstrap:
        """`froc_bootstrap` of these entries under the luna16 rule (options passed on)."""
        return froc_bootstrap(self.scores, self.groups, self.lesion_ids,
                              self.lesions_per_group, rule="luna16", **options)


@dataclass(frozen=True)
class _Findings:
    centres: np.ndarray
    radius_sq: np.ndarray
    groups: np.ndarray


def _findings(centres: ArrayLike | None, diameters: ArrayLike | None,
              groups: ArrayLike | None, name: str, dims: int) -> _Findings:
    """Findings as the script reads them (no finding at all is allowed)."""
    centres = [] if centres is None else centres
    diameters = [] if diameters is None else diameters
    groups = [] if groups is None else groups
    v.same_length(**{f"{name}_centres": centres, f"{name}_diameters": diameters,
                     f"{name}_groups": groups})
    if len(groups) == 0:
        return _Findings(np.zeros((0, dims)), np.zeros(0), np.array([], dtype=object))
    c = v.finite_floats(centres, f"{name}_centres", ndim=2)
    d = v.finite_floats(diameters, f"{name}_diameters")
    if c.shape[1] != dims:
        raise v.MetricInputError(f"{name}_centres: {c.shape[1]} coordinates per finding but "
                                 f"candidate_positions have {dims}")
    d = np.where(d < 0.0, LUNA16_UNKNOWN_DIAMETER.value, d)
    return _Findings(c, (d / 2.0) ** 2, v.array_1d(groups, f"{name}_groups"))


def _within(pos: np.ndarray, found: _Findings, which: np.ndarray) -> np.ndarray:
    """(marks, findings) squared distance < squared radius, summed axis by axis in the
    script's order (x, then y, then z) so that a boundary case compares the same floats."""
    diff = found.centres[None, which, :] - pos[:, None, :]
    dist = diff[..., 0] ** 2
    for k in range(1, diff.shape[2]):
        dist = dist + diff[..., k] ** 2
    return dist < found.radius_sq[which][None, :]


def _cap(scores: np.ndarray, max_marks: int | None) -> np.ndarray:
    """The script's cap: over max_marks marks, keep those above the (max_marks+1)-th score."""
    if max_marks is None or scores.size <= max_marks:
        return np.ones(scores.size, dtype=bool)
    return scores > np.sort(scores)[::-1][max_marks]


def luna16_marks(scores: ArrayLike, candidate_positions: ArrayLike,
                 candidate_groups: ArrayLike, lesion_centres: ArrayLike,
                 lesion_diameters: ArrayLike, lesion_groups: ArrayLike,
                 groups: Iterable[Hashable] = (), *,
                 excluded_centres: ArrayLike | None = None,
                 excluded_diameters: ArrayLike | None = None,
                 excluded_groups: ArrayLike | None = None,
                 max_marks: int | None = LUNA16_MAX_MARKS.value) -> Luna16Marks:
    """Match marks (candidates: score, position, scan) to the included findings (centre,
    diameter, scan; LUNA16's annotations.csv) and the excluded ones (annotations_excluded.csv)
    by the LUNA16 rule. `groups`: every scan of the set (the script's seriesuids.csv), also
    those without marks or findings; default: the scans of the marks and findings.
    `max_marks`: the per-scan cap (None: no cap). Units: the same for positions and
    diameters (world mm in LUNA16)."""
    s = v.scores_1d(scores)
    pos = v.finite_floats(candidate_positions, "candidate_positions", ndim=2)
    cgroups = v.array_1d(candidate_groups, "candidate_groups")
    v.same_length(scores=s, candidate_positions=pos, candidate_groups=cgroups)
    if max_marks is not None:
        max_marks = v.positive_int(max_marks, "max_marks")
    lesions = _findings(lesion_centres, lesion_diameters, lesion_groups, "lesion", pos.shape[1])
    excluded = _findings(excluded_centres, excluded_diameters, excluded_groups, "excluded",
                         pos.shape[1])
    v.same_kind(candidate_groups=cgroups, lesion_groups=lesions.groups,
                excluded_groups=excluded.groups)
    scans = _scan_list(groups, cgroups, lesions.groups, excluded.groups)

    out_mark: list[int] = []
    out_lesion: list[int] = []
    capped = irrelevant = double = 0
    for scan in scans:
        marks = np.flatnonzero(cgroups == scan)
        kept = _cap(s[marks], max_marks)
        capped += int((~kept).sum())
        marks = marks[kept]
        mine = np.flatnonzero(lesions.groups == scan)
        hit = _within(pos[marks], lesions, mine)
        off = _within(pos[marks], excluded, np.flatnonzero(excluded.groups == scan)).any(axis=1)
        double += int(np.maximum(hit.sum(axis=0) - 1, 0).sum())
        for row, m in enumerate(marks):
            if hit[row].any():
                out_mark += [int(m)] * int(hit[row].sum())
                out_lesion += mine[hit[row]].tolist()
            elif off[row]:
                irrelevant += 1
            else:
                out_mark.append(int(m))
                out_lesion.append(NO_LESION)
    mark = np.array(out_mark, dtype=int)
    per_scan = dict.fromkeys(scans, 0)
    per_scan.update(Counter(lesions.groups.tolist()))
    return Luna16Marks(s[mark], cgroups[mark], np.array(out_lesion, dtype=int), mark,
                       per_scan, capped, irrelevant, double)


def _scan_list(groups: Iterable[Hashable], *seen: np.ndarray) -> list[Hashable]:
    """The scan list: `groups` as given (every mark and finding must be on one of them), or
    else every scan that has a mark or a finding, in order of appearance."""
    listed = list(dict.fromkeys(groups))
    present = list(dict.fromkeys(x for arr in seen for x in arr.tolist()))
    if not listed:
        return present
    stray = [x for x in present if x not in set(listed)]
    if stray:
        raise v.MetricInputError(f"groups: scan {stray[0]!r} has marks or findings but is not "
                                 "in the scan list (the LUNA16 script would ignore them: "
                                 "leave them out first)")
    return listed
