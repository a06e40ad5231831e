"""Metric inputs of different kinds (text vs numbers) and empty lesion sets are errors that
name the argument, never a silent 0 (issue 10, item 14)."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.metrics import (
    NO_LESION,
    MetricInputError,
    accuracy,
    confusion_matrix,
    froc_curve,
    hits_within_radius,
    per_class_scores,
    roc_auc,
)


@pytest.mark.parametrize("call", [
    lambda: accuracy(["0", "1"], [0, 1]),
    lambda: accuracy([0, 1], np.array(["0", "1"])),
    lambda: confusion_matrix(["a", "b"], [0, 1]),
    lambda: per_class_scores([0.0, 1.0], ["0", "1"]),
    lambda: confusion_matrix([0, 1], [0, 1], labels=["0", "1"]),
    lambda: accuracy(np.array(["0", 1], dtype=object), ["0", "1"]),
])
def test_labels_of_different_kinds_are_an_error(call):
    with pytest.raises(MetricInputError, match="kind"):
        call()


def test_labels_of_one_kind_still_work():
    assert accuracy(["a", "b"], ["a", "a"]) == 0.5
    assert accuracy([0, 1], [0.0, 1.0]) == 1.0              # integers and floats are numbers
    assert accuracy([True, False], [1, 0]) == 1.0           # so are booleans
    assert accuracy(np.array(["x", "y"], dtype=object), ["x", "y"]) == 1.0


def test_binary_labels_given_as_text_are_an_error():
    with pytest.raises(MetricInputError, match=r"labels: .*kind"):
        roc_auc(["0", "1", "1"], [0.1, 0.8, 0.7])


def test_empty_lesion_set_still_checks_its_arguments():
    cands, groups = [[0.0, 0.0], [1.0, 1.0]], ["a", "b"]
    # No lesions at all: every candidate misses.
    assert hits_within_radius(cands, groups, np.zeros((0, 2)), [], []).tolist() == \
        [NO_LESION, NO_LESION]
    with pytest.raises(MetricInputError, match="mismatched lengths"):
        hits_within_radius(cands, groups, [[0.0, 0.0]], [1.0], [])
    with pytest.raises(MetricInputError, match="mismatched lengths"):
        hits_within_radius(cands, groups, np.zeros((0, 2)), [2.0], [])
    with pytest.raises(MetricInputError, match="lesion_radii: NaN"):
        hits_within_radius(cands, groups, [[0.0, 0.0]], [np.nan], ["a"])


def test_group_ids_of_different_kinds_are_an_error():
    # 'a' and 1 can never match: a silent "no hit" would hide the mistake.
    with pytest.raises(MetricInputError, match="kind"):
        hits_within_radius([[0.0, 0.0]], ["1"], [[0.0, 0.0]], [1.0], [1])
    with pytest.raises(MetricInputError, match="groups holds text, lesions_per_group holds "
                                               "number"):
        froc_curve([0.9], ["1"], [0], {1: 1})
