"""Numbers as the reports and metrics.json carry them: an estimate with its 95% interval and
the method that gave it, as a plain dict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medtl.metrics.roc import delong_auc


def interval(estimate: float, low: float, high: float, method: str) -> dict[str, Any]:
    return {"estimate": float(estimate), "low": float(low), "high": float(high),
            "method": method}


def auc_interval(labels: ArrayLike, scores: ArrayLike) -> dict[str, Any] | None:
    """ROC AUC with DeLong's 95% interval; None without two samples of each class."""
    labels = np.asarray(labels, int)
    if not 1 < labels.sum() < len(labels) - 1:
        return None
    roc = delong_auc(labels, np.asarray(scores, float))
    return interval(roc.auc, roc.interval.low, roc.interval.high, "DeLong")


def wilson(successes: int, n: int, z: float = 1.959964) -> dict[str, Any]:
    """A proportion with its 95% Wilson score interval."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return interval(p, max(0.0, centre - half), min(1.0, centre + half), "Wilson score")
