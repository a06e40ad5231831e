"""Boundary error per interface, Dice overlap, localisation failures, box-plot statistics.

Boundaries (Tajbakhsh et al. 2016, intima-media interfaces, Fig. 8-9) are given as one row
position per image column (float: snakes are sub-pixel); the error of an interface is the mean
absolute vertical distance between the predicted and the expert boundary over the columns,
optionally times the pixel size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from medtl.metrics import _validate as v
from medtl.provenance import paper

LOCALISATION_DICE = paper(0.80, "Ravishankar et al. 2016 (kidney ultrasound), Sec. 3: a "
                                "localisation failure is an image whose detected ROI has "
                                "Dice < 0.80 with the ground truth")
TUKEY_WHISKER = paper(1.5, "Tajbakhsh et al. 2016, Fig. 9: whiskers by the Tukey method "
                           "(1.5 IQR)")


@dataclass(frozen=True)
class BoxStats:
    """Tukey box-plot statistics with the mean and standard deviation shown above each box."""

    median: float
    q1: float
    q3: float
    whisker_low: float     # smallest value >= q1 - 1.5 IQR
    whisker_high: float    # largest value <= q3 + 1.5 IQR
    outliers: np.ndarray
    mean: float
    std: float             # sample standard deviation (ddof=1; 0 for a single value)
    n: int


def boundary_error(predicted: ArrayLike, expert: ArrayLike, pixel_size: float = 1.0) -> float:
    """Mean |predicted row - expert row| over the image columns, times `pixel_size`."""
    p = v.finite_floats(predicted, "predicted")
    e = v.finite_floats(expert, "expert")
    v.same_length(predicted=p, expert=e)
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise v.MetricInputError(f"pixel_size: expected > 0, got {pixel_size}")
    return float(np.abs(p - e).mean() * pixel_size)


def interface_errors(predicted: Mapping[str, ArrayLike], expert: Mapping[str, ArrayLike],
                     pixel_size: float = 1.0) -> dict[str, float]:
    """`boundary_error` for each interface of one image (e.g. "lumen-intima",
    "media-adventitia"); both mappings must name the same interfaces."""
    if set(predicted) != set(expert):
        raise v.MetricInputError(f"predicted: interfaces {sorted(predicted)} differ from the "
                                 f"expert's {sorted(expert)}")
    if not expert:
        raise v.MetricInputError("expert: no interfaces")
    errors = {}
    for name in expert:
        try:
            errors[name] = boundary_error(predicted[name], expert[name], pixel_size)
        except v.MetricInputError as exc:
            raise v.MetricInputError(f"interface {name!r}: {exc}") from exc
    return errors


def interface_error_table(predicted: Sequence[Mapping[str, ArrayLike]],
                          expert: Sequence[Mapping[str, ArrayLike]],
                          pixel_size: float = 1.0) -> dict[str, np.ndarray]:
    """Per interface, the error of every image (in order), ready for `box_stats`."""
    v.same_length(predicted=predicted, expert=expert)
    if not expert:
        raise v.MetricInputError("expert: no images")
    rows = []
    for i, (p, e) in enumerate(zip(predicted, expert, strict=True)):
        try:
            rows.append(interface_errors(p, e, pixel_size))
        except v.MetricInputError as exc:
            raise v.MetricInputError(f"image {i}: {exc}") from exc
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


def box_stats(values: ArrayLike, whisker: float = TUKEY_WHISKER.value) -> BoxStats:
    """Tukey box-plot statistics (quartiles by linear interpolation, as matplotlib)."""
    x = v.scores_1d(values, "values")
    q1, median, q3 = np.percentile(x, [25.0, 50.0, 75.0])
    reach = whisker * (q3 - q1)
    inside = x[(x >= q1 - reach) & (x <= q3 + reach)]
    outliers = np.sort(x[(x < q1 - reach) | (x > q3 + reach)])
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return BoxStats(float(median), float(q1), float(q3), float(inside.min()),
                    float(inside.max()), outliers, float(x.mean()), std, int(x.size))


def dice(mask_a: ArrayLike, mask_b: ArrayLike) -> float:
    """2 |A and B| / (|A| + |B|) of two boolean masks of the same shape; 1.0 when both are
    empty (they agree)."""
    a, b = np.asarray(mask_a), np.asarray(mask_b)
    for name, m in (("mask_a", a), ("mask_b", b)):
        if m.size == 0:
            raise v.MetricInputError(f"{name}: empty mask")
        if m.dtype != bool and not np.isin(m, (0, 1)).all():
            raise v.MetricInputError(f"{name}: expected a boolean (0/1) mask")
    if a.shape != b.shape:
        raise v.MetricInputError(f"mismatched shapes: mask_a={a.shape}, mask_b={b.shape}")
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def box_dice(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Dice of two axis-aligned boxes given as (x, y, width, height) (ChestX-ray14's bounding
    box format); any number of dimensions: (x1..xd, size1..sized)."""
    a = v.finite_floats(box_a, "box_a")
    b = v.finite_floats(box_b, "box_b")
    v.same_length(box_a=a, box_b=b)
    if a.size % 2:
        raise v.MetricInputError(f"box_a: expected corner then sizes, got {a.size} values")
    d = a.size // 2
    for name, box in (("box_a", a), ("box_b", b)):
        if (box[d:] <= 0).any():
            raise v.MetricInputError(f"{name}: sizes must be > 0, got {box[d:].tolist()}")
    overlap = np.clip(np.minimum(a[:d] + a[d:], b[:d] + b[d:]) - np.maximum(a[:d], b[:d]),
                      0.0, None)
    return float(2.0 * overlap.prod() / (a[d:].prod() + b[d:].prod()))


def localisation_failures(dice_scores: ArrayLike,
                          threshold: float = LOCALISATION_DICE.value) -> int:
    """Number of images whose Dice is below `threshold` (Ravishankar et al. 2016: 0.80)."""
    d = v.scores_1d(dice_scores, "dice_scores")
    if ((d < 0) | (d > 1)).any():
        raise v.MetricInputError("dice_scores: values must lie in [0, 1]")
    if not 0.0 < threshold <= 1.0:
        raise v.MetricInputError(f"threshold: expected a Dice in (0, 1], got {threshold}")
    return int((d < threshold).sum())
