"""Accuracy, per-class precision/recall/F1 and confusion matrices (single- and multi-label).

Single-label inputs are 1-D arrays of class labels (ints or strings). Multi-label inputs are
2-D 0/1 indicator arrays (samples, classes), e.g. ILD slices that carry several labels (Shin
et al. 2016, Sec. II). The values equal scikit-learn's with `zero_division=0`: a precision,
recall or F1 whose denominator is 0 is reported as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medtl.metrics import _validate as v


@dataclass(frozen=True)
class ClassScores:
    """Per-class scores, in the order of `labels`."""

    labels: list[Any]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray     # true samples per class

    def macro_f1(self) -> float:
        return float(self.f1.mean())

    def as_dict(self) -> dict[Any, dict[str, float]]:
        return {label: {"precision": float(p), "recall": float(r), "f1": float(f),
                        "support": int(n)}
                for label, p, r, f, n in zip(self.labels, self.precision, self.recall,
                                             self.f1, self.support, strict=True)}


def _is_multilabel(y_true: np.ndarray, y_pred: np.ndarray) -> bool:
    if y_true.ndim != y_pred.ndim:
        raise v.MetricInputError(f"y_true is {y_true.ndim}-D but y_pred is {y_pred.ndim}-D")
    if y_true.ndim not in (1, 2):
        raise v.MetricInputError(f"y_true: expected 1-D labels or a 2-D indicator array, "
                                 f"got shape {y_true.shape}")
    if y_true.size == 0:
        raise v.MetricInputError("y_true: empty input")
    return y_true.ndim == 2


def _indicators(y: np.ndarray, name: str) -> np.ndarray:
    if v.value_kind(y, name) != "number":
        raise v.MetricInputError(f"{name}: multi-label input must be 0/1 numbers, not text "
                                 "(values of another kind)")
    try:
        as_float = y.astype(float)
    except (TypeError, ValueError) as exc:
        raise v.MetricInputError(f"{name}: multi-label input must be 0/1 ({exc})") from exc
    if ((as_float != 0) & (as_float != 1)).any():
        raise v.MetricInputError(f"{name}: multi-label input must be 0/1 indicators")
    return as_float == 1


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray, bool]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    multi = _is_multilabel(t, p)
    if t.shape != p.shape:
        raise v.MetricInputError(f"mismatched shapes: y_true={t.shape}, y_pred={p.shape}")
    if multi:
        return _indicators(t, "y_true"), _indicators(p, "y_pred"), True
    v.same_kind(y_true=t, y_pred=p)
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise v.MetricInputError(f"{name}: NaN label at index {int(np.isnan(arr).argmax())}")
    return t, p, False


def _class_index(t: np.ndarray, p: np.ndarray,
                 labels: Sequence[Any] | None) -> tuple[list[Any], np.ndarray, np.ndarray]:
    if labels is None:
        try:
            classes = np.unique(np.r_[t, p]).tolist()
        except TypeError as exc:
            raise v.MetricInputError(f"y_true/y_pred: labels must be comparable ({exc})") from exc
    else:
        classes = list(labels)
        if not classes:
            raise v.MetricInputError("labels: empty")
        if len(set(classes)) != len(classes):
            raise v.MetricInputError(f"labels: duplicates in {classes}")
        v.same_kind(y_true=t, labels=np.array(classes, dtype=object))
    slot = {c: i for i, c in enumerate(classes)}
    out = []
    for name, arr in (("y_true", t), ("y_pred", p)):
        values = arr.tolist()
        unknown = next((x for x in values if x not in slot), None)
        if unknown is not None:
            raise v.MetricInputError(f"{name}: label {unknown!r} is not in labels {classes}")
        out.append(np.array([slot[x] for x in values], dtype=int))
    return classes, out[0], out[1]


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples predicted exactly (multi-label: every label right, i.e. subset
    accuracy, as scikit-learn's `accuracy_score`)."""
    t, p, multi = _pair(y_true, y_pred)
    equal = (t == p).all(axis=1) if multi else t == p
    return float(equal.mean())


def _confusion(t: np.ndarray, p: np.ndarray,
               labels: Sequence[Any] | None) -> tuple[list[Any], np.ndarray]:
    classes, ti, pi = _class_index(t, p, labels)
    k = len(classes)
    return classes, np.bincount(ti * k + pi, minlength=k * k).reshape(k, k)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike,
                     labels: Sequence[Any] | None = None) -> np.ndarray:
    """Counts: rows are true classes, columns predicted, in the order of `labels` (default:
    the sorted labels present). Single-label input only (see `multilabel_confusion`)."""
    t, p, multi = _pair(y_true, y_pred)
    if multi:
        raise v.MetricInputError("y_true: multi-label input; use multilabel_confusion")
    return _confusion(t, p, labels)[1]


def row_normalised(counts: ArrayLike) -> np.ndarray:
    """Each row divided by its total (fractions of each true class, as Shin et al. 2016,
    Table V); a row without samples is NaN rather than a misleading 0."""
    c = v.finite_floats(counts, "counts", ndim=2)
    if c.shape[0] != c.shape[1] or (c < 0).any():
        raise v.MetricInputError(f"counts: expected a square matrix of counts, got {c.shape}")
    totals = c.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, c / totals, np.nan)


def multilabel_confusion(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """(classes, 2, 2) matrices [[tn, fp], [fn, tp]] per label column (as scikit-learn's
    `multilabel_confusion_matrix`)."""
    t, p, multi = _pair(y_true, y_pred)
    if not multi:
        raise v.MetricInputError("y_true: expected a 2-D 0/1 indicator array")
    tp = (t & p).sum(axis=0)
    fp = (~t & p).sum(axis=0)
    fn = (t & ~p).sum(axis=0)
    tn = t.shape[0] - tp - fp - fn
    return np.stack([np.stack([tn, fp], axis=-1), np.stack([fn, tp], axis=-1)], axis=1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=float), where=den > 0)


def per_class_scores(y_true: ArrayLike, y_pred: ArrayLike,
                     labels: Sequence[Any] | None = None) -> ClassScores:
    """Precision, recall, F1 and support per class (multi-label: per label column, labelled
    0..k-1 unless `labels` names the columns)."""
    t, p, multi = _pair(y_true, y_pred)
    if multi:
        m = multilabel_confusion(t, p)
        tp, fp, fn = m[:, 1, 1], m[:, 0, 1], m[:, 1, 0]
        classes = list(range(t.shape[1])) if labels is None else list(labels)
        if len(classes) != t.shape[1]:
            raise v.MetricInputError(f"labels: {len(classes)} names for {t.shape[1]} columns")
    else:
        classes, cm = _confusion(t, p, labels)
        tp = np.diag(cm)
        fp = cm.sum(axis=0) - tp
        fn = cm.sum(axis=1) - tp
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2.0 * tp, 2.0 * tp + fp + fn)
    return ClassScores(classes, precision, recall, f1, tp + fn)
