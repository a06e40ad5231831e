"""Scores of the ILD classification studies (Shin 2016 Tables III-VI, VIII) from per-sample
predictions: accuracy (with a bootstrap interval over patients), class-balanced accuracy,
per-class precision / recall / F1, macro F1 and the confusion matrix."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from medtl.errors import InputError
from medtl.metrics import (
    CONFIDENCE_LEVEL,
    accuracy,
    confusion_matrix,
    per_class_scores,
    row_normalised,
)
from medtl.metrics.bootstrap import percentile_interval, resample_counts
from medtl.provenance import assumed

SCORING = assumed(
    "one test record per ROI patch, or per label of a slice",
    "Shin reports single-label accuracy and F-scores for slices that can carry several labels "
    "(Sec. II) without saying how they are counted; the test set holds a multi-label slice once "
    "per label (as the training set), so at most one of its records can be right. "
    "accuracy_any_label counts such a slice right when the prediction is any of its labels")
BALANCED = assumed(
    "balanced accuracy (mean per-class recall) for Table VIII",
    "Shin compares the priors 'on the balanced validation sets' (Sec. IV-D); the mean recall "
    "over classes is the accuracy on a class-balanced set")
INTERVAL_BOOT = assumed(1000, "bootstrap replicates of the accuracy interval; enough for a "
                              "95% percentile interval at 3 decimals")


def _accuracy_interval(correct: np.ndarray, patients: list[str], seed: int,
                       n_boot: int) -> dict[str, Any]:
    """95% percentile bootstrap over patients (records of one patient are not independent)."""
    groups = sorted(set(patients))
    index = {g: i for i, g in enumerate(groups)}
    gi = np.array([index[p] for p in patients])
    hits = np.bincount(gi, weights=correct.astype(float), minlength=len(groups))
    totals = np.bincount(gi, minlength=len(groups)).astype(float)
    reps = np.concatenate([(c @ hits) / (c @ totals)
                           for c in resample_counts(len(groups), n_boot, seed)])
    return percentile_interval(float(correct.mean()), reps, CONFIDENCE_LEVEL.value).to_dict()


def _plain_matrix(m: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in m]


def score_classification(rows: list[dict[str, Any]], class_names: list[str], level: str, *,
                         seed: int = 0, n_boot: int = INTERVAL_BOOT.value) -> dict[str, Any]:
    """Every score of the ILD tables from prediction rows (`label`, `predicted`,
    `patient_id`; slice level also `slice` and `labels`, the slice's class names joined by
    '|')."""
    if not rows:
        raise InputError("no predictions to score")
    k = len(class_names)
    truth = np.array([int(r["label"]) for r in rows])
    pred = np.array([int(r["predicted"]) for r in rows])
    bad = [int(v) for v in np.r_[truth, pred] if not 0 <= v < k]
    if bad:
        raise InputError(f"class index {bad[0]} outside 0..{k - 1} ({', '.join(class_names)})")
    classes = list(range(k))
    counts = confusion_matrix(truth, pred, labels=classes)
    per = per_class_scores(truth, pred, labels=classes)
    present = per.support > 0
    patients = [str(r["patient_id"]) for r in rows]
    out: dict[str, Any] = {
        "accuracy": accuracy(truth, pred),
        "accuracy_interval": _accuracy_interval(truth == pred, patients, seed, n_boot),
        "balanced_accuracy": float(per.recall[present].mean()),
        "macro_f1": per.macro_f1(),
        "per_class": {class_names[c]: v for c, v in per.as_dict().items()},
        "confusion": {"classes": list(class_names), "counts": counts.tolist(),
                      "row_normalised": _plain_matrix(row_normalised(counts))},
        "samples": len(rows), "patients": len(set(patients)),
        "scoring": SCORING.to_dict(), "balanced_accuracy_rule": BALANCED.to_dict(),
    }
    if level == "slice":
        out["accuracy_any_label"] = _any_label_accuracy(rows, class_names)
    return out


def _any_label_accuracy(rows: list[dict[str, Any]], class_names: list[str]) -> float:
    """Per slice (its records share one image, hence one prediction; per seed when rows of
    several seeds are pooled): right when the prediction is any of the slice's labels."""
    labels: dict[tuple[str, ...], set[str]] = defaultdict(set)
    predicted: dict[tuple[str, ...], int] = {}
    for r in rows:
        key = (str(r.get("seed", "")), str(r["patient_id"]), str(r["slice"]))
        labels[key].update(str(r["labels"]).split("|"))
        predicted[key] = int(r["predicted"])
    return float(np.mean([class_names[p] in labels[key] for key, p in predicted.items()]))
