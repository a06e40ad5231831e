"""Bootstrap machinery shared by the ROC and FROC metrics, and the interval comparison rule.

Resampling unit: the group (patient or volume) whenever groups are given, else the single
candidate. A replicate draws as many groups as there are, with replacement, and is represented
by how often each group was drawn (a multinomial count vector); every metric is then computed
with each candidate weighted by its group's count, which equals computing it on the
concatenated resample. Intervals are percentile intervals over the valid replicates (a
replicate is invalid when the metric is undefined on it, e.g. no positive drawn).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medtl.metrics._validate import MetricInputError, positive_int, probability_level
from medtl.provenance import assumed, paper

CONFIDENCE_LEVEL = paper(
    0.95, "Tajbakhsh et al. 2016, statistics: 95% confidence intervals for ROC and FROC curves")
BOOTSTRAP_METHOD = assumed(
    "percentile bootstrap over groups (patients/volumes)",
    "Tajbakhsh et al. 2016 cite Edwards et al. 2002 (maximum-likelihood IDCA fit of FROC "
    "curves) without the fitting details; the non-parametric bootstrap over scans is the "
    "LUNA16 evaluation convention and needs no parametric model")
N_BOOT = assumed(2000, "no paper gives a replicate count; 2000 is a common choice for "
                       "95% percentile intervals")
SEED = assumed(0, "any fixed seed; recorded so that intervals are reproducible")

_CHUNK = 256  # replicates drawn and evaluated at once (bounds memory, not results)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float
    method: str          # "bootstrap" or "delong"
    n_valid: int = 0     # bootstrap replicates the interval was computed from (0 for DeLong)

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def differ(a: Interval, b: Interval) -> bool:
    """Tajbakhsh et al. 2016 (statistics): two curves differ at an operating point when their
    95% confidence intervals there do not overlap."""
    return not a.overlaps(b)


def resample_counts(n_groups: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (replicates, n_groups) arrays of draw counts, `n_boot` rows in all, seeded."""
    n_groups = positive_int(n_groups, "n_groups")
    n_boot = positive_int(n_boot, "n_boot")
    rng = np.random.default_rng(seed)
    uniform = np.full(n_groups, 1.0 / n_groups)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        yield rng.multinomial(n_groups, uniform, size=size).astype(float)


def percentile_interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    """Percentile interval of the finite replicate values (NaN marks an invalid replicate)."""
    level = probability_level(level)
    valid = replicates[np.isfinite(replicates)]
    if valid.size == 0:
        raise MetricInputError("bootstrap: no valid replicate (the metric was undefined on "
                               "every resample); use more groups or more replicates")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return Interval(float(estimate), float(low), float(high), level, "bootstrap",
                    int(valid.size))


def percentile_band(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of (replicates, points) curves; NaN rows are skipped."""
    level = probability_level(level)
    valid = replicates[np.isfinite(replicates).all(axis=1)]
    if valid.shape[0] == 0:
        raise MetricInputError("bootstrap: no valid replicate for the curve band")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(valid, [tail, 100.0 - tail], axis=0)
    return low, high
