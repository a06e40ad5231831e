"""Accuracy, per-class precision/recall/F1 and confusion matrices: by hand and against
scikit-learn (single- and multi-label)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medtl.metrics import (
    MetricInputError,
    accuracy,
    confusion_matrix,
    multilabel_confusion,
    per_class_scores,
    row_normalised,
)

ILD = ["NM", "EM", "GG", "FB", "MN", "CD"]


def test_hand_worked_three_classes():
    truth = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    # Rows truth a, b, c: a -> (2, 1, 0); b -> (0, 1, 1); c -> (0, 0, 1).
    cm = confusion_matrix(truth, pred)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_allclose(row_normalised(cm), [[2 / 3, 1 / 3, 0], [0, 0.5, 0.5], [0, 0, 1]])
    assert accuracy(truth, pred) == pytest.approx(4 / 6)
    scores = per_class_scores(truth, pred)
    # a: P 2/2, R 2/3, F1 = 2*2/(2*2+0+1) = 0.8; b: P 1/2, R 1/2, F1 0.5;
    # c: P 1/2, R 1/1, F1 = 2/(2+1+0) = 2/3.
    assert scores.labels == ["a", "b", "c"]
    np.testing.assert_allclose(scores.precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(scores.recall, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(scores.f1, [0.8, 0.5, 2 / 3])
    np.testing.assert_array_equal(scores.support, [3, 2, 1])
    assert scores.macro_f1() == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert scores.as_dict()["c"]["support"] == 1


def test_absent_class_gets_zero_scores_and_nan_row():
    # "CD" never occurs nor is predicted: precision/recall/F1 0 (zero_division=0), row NaN.
    truth, pred = ["NM", "EM", "NM"], ["NM", "NM", "NM"]
    scores = per_class_scores(truth, pred, labels=ILD)
    assert scores.f1[ILD.index("CD")] == 0.0
    assert scores.precision[ILD.index("NM")] == pytest.approx(2 / 3)
    rows = row_normalised(confusion_matrix(truth, pred, labels=ILD))
    assert np.isnan(rows[ILD.index("CD")]).all()
    np.testing.assert_allclose(rows[ILD.index("NM")], [1, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("seed", [0, 1])
def test_single_label_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, 500)
    pred = np.where(rng.random(500) < 0.6, truth, rng.integers(0, 6, 500))
    pred[pred == 5] = 4  # class 5 is never predicted: precision 0/0
    assert accuracy(truth, pred) == pytest.approx(skm.accuracy_score(truth, pred))
    cm = confusion_matrix(truth, pred, labels=range(6))
    np.testing.assert_array_equal(cm, skm.confusion_matrix(truth, pred, labels=range(6)))
    np.testing.assert_allclose(row_normalised(cm),
                               skm.confusion_matrix(truth, pred, normalize="true"))
    ours = per_class_scores(truth, pred, labels=range(6))
    p, r, f, s = skm.precision_recall_fscore_support(truth, pred, labels=range(6),
                                                     zero_division=0)
    np.testing.assert_allclose(ours.precision, p)
    np.testing.assert_allclose(ours.recall, r)
    np.testing.assert_allclose(ours.f1, f)
    np.testing.assert_array_equal(ours.support, s)
    np.testing.assert_allclose(ours.f1, skm.f1_score(truth, pred, average=None, zero_division=0))


def test_multilabel_equals_sklearn():
    rng = np.random.default_rng(3)
    truth = (rng.random((200, 6)) < 0.3).astype(int)
    pred = np.where(rng.random((200, 6)) < 0.8, truth, 1 - truth)
    pred[:, 5] = 0  # a label never predicted
    assert accuracy(truth, pred) == pytest.approx(skm.accuracy_score(truth, pred))
    np.testing.assert_array_equal(multilabel_confusion(truth, pred),
                                  skm.multilabel_confusion_matrix(truth, pred))
    ours = per_class_scores(truth, pred, labels=ILD)
    p, r, f, s = skm.precision_recall_fscore_support(truth, pred, zero_division=0)
    np.testing.assert_allclose(ours.precision, p)
    np.testing.assert_allclose(ours.recall, r)
    np.testing.assert_allclose(ours.f1, f)
    np.testing.assert_array_equal(ours.support, s)
    assert ours.labels == ILD


def test_multilabel_hand_worked():
    truth = [[1, 0], [1, 1], [0, 1]]
    pred = [[1, 0], [1, 0], [1, 1]]
    # Subset accuracy: rows 1 only -> 1/3. Label 0: tp 2, fp 1, fn 0, tn 0;
    # label 1: tp 1, fp 0, fn 1, tn 1.
    assert accuracy(truth, pred) == pytest.approx(1 / 3)
    np.testing.assert_array_equal(multilabel_confusion(truth, pred),
                                  [[[0, 1], [0, 2]], [[1, 0], [1, 1]]])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: accuracy([1, 2, 3], [1, 2]), "mismatched shapes"),
    (lambda: accuracy([], []), "y_true: empty"),
    (lambda: accuracy([1.0, np.nan], [1.0, 1.0]), "y_true: NaN"),
    (lambda: confusion_matrix([1, 2], [1, 3], labels=[1, 2]), "y_pred: label 3"),
    (lambda: confusion_matrix([[1, 0]], [[1, 0]]), "multi-label"),
    (lambda: per_class_scores([[1, 2]], [[1, 0]]), "y_true: multi-label input must be 0/1"),
    (lambda: per_class_scores([[1, 0]], [[1, 0]], labels=["x"]), "labels: 1 names for 2"),
    (lambda: row_normalised([[1, 2, 3]]), "counts: expected a square"),
])
def test_bad_input_named(call, message):
    with pytest.raises(MetricInputError, match=message):
        call()
