"""Threshold sweeps and reading a value off a curve, shared by ROC and FROC.

A sweep sorts the scores once, highest first, and reports cumulative (weighted) counts at
every distinct score: the operating point of the rule "positive when score >= threshold".
Tied scores enter together, so a tie between a true and a false call is a diagonal step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medtl.metrics._validate import MetricInputError

INTERPOLATIONS = ("linear", "step")


@dataclass(frozen=True)
class Sweep:
    """Sort order and the last sorted position of each distinct score (descending)."""

    order: np.ndarray
    ends: np.ndarray
    thresholds: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray) -> Sweep:
        order = np.argsort(-scores, kind="mergesort")
        ordered = scores[order]
        ends = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
        return cls(order, ends, ordered[ends])

    def cumulative(self, weights: np.ndarray) -> np.ndarray:
        """Cumulative weights at each threshold, with a leading 0 (threshold +inf).

        `weights` is (items,) or (replicates, items); the result keeps the leading axes.
        """
        summed = np.cumsum(weights[..., self.order], axis=-1)[..., self.ends]
        zero = np.zeros((*summed.shape[:-1], 1))
        return np.concatenate([zero, summed], axis=-1)


def value_at(x: np.ndarray, y: np.ndarray, at: np.ndarray, interpolation: str,
             name: str = "operating points") -> np.ndarray:
    """y read off a curve of non-decreasing x (starting at 0) at the abscissae `at`.

    Convention (both modes): at an abscissa the curve reaches exactly, the value is the highest
    y with x <= at (the top of a vertical segment: the best operating point not exceeding it).
    "step" stops there; "linear" interpolates linearly towards the next point with a larger x,
    as the LUNA16 evaluation does. Beyond the last point the curve stays at its last value
    (accepting every candidate cannot raise it further).
    """
    if interpolation not in INTERPOLATIONS:
        raise MetricInputError(f"interpolation: expected one of {INTERPOLATIONS}, "
                               f"got {interpolation!r}")
    at = np.asarray(at, dtype=float)
    if not np.isfinite(at).all() or (at < 0).any():
        raise MetricInputError(f"{name}: must be finite and >= 0, got {at.tolist()}")
    a = np.searchsorted(x, at, side="right") - 1
    value = y[a]
    if interpolation == "step":
        return value
    inside = a < x.size - 1
    b = np.minimum(a + 1, x.size - 1)
    width = np.where(inside, x[b] - x[a], 1.0)
    slope = np.where(inside, (y[b] - y[a]) / width, 0.0)
    return value + slope * (at - x[a])


def area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under the curve over [0, limit] (curve held flat past its end)."""
    keep = x <= limit
    xs = np.r_[x[keep], limit]
    ys = np.r_[y[keep], value_at(x, y, np.array([limit]), "linear")]
    return float(np.trapezoid(ys, xs))
