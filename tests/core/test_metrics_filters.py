"""Filter-change counts (> 40% relative L2, Ravishankar et al. 2016 Table 2)."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.metrics import FILTER_CHANGE, MetricInputError, changed_filters, relative_filter_change


def test_hand_worked_counts():
    # conv1: 3 filters of shape (1, 2, 2), each ||W0_f|| = 2 (four entries of 1).
    # Filter 0 unchanged (0); filter 1 one entry +1 -> ||diff|| 1, 1/2 = 0.5 > 0.4;
    # filter 2 one entry +0.8 -> 0.4, not more than 0.4.
    before = {"conv1": np.ones((3, 1, 2, 2)), "fc8": np.array([[3.0, 4.0], [0.0, 0.0]])}
    after = {"conv1": before["conv1"].copy(), "fc8": np.array([[3.0, 4.0], [0.0, 1.0]])}
    after["conv1"][1, 0, 0, 0] += 1.0
    after["conv1"][2, 0, 0, 0] += 0.8
    result = changed_filters(before, after)
    np.testing.assert_allclose(result["conv1"].relative_change, [0.0, 0.5, 0.4])
    assert (result["conv1"].changed, result["conv1"].total) == (1, 3)
    # fc8 filter 1 was all zeros and moved: infinite relative change, counted.
    np.testing.assert_array_equal(result["fc8"].relative_change, [0.0, np.inf])
    assert result["fc8"].changed == 1
    assert changed_filters(before, after, threshold=0.3)["conv1"].changed == 2
    assert FILTER_CHANGE.value == 0.40 and "Ravishankar" in FILTER_CHANGE.source


def test_random_against_direct_formula():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(16, 3, 5, 5))
    w1 = w0 + rng.normal(scale=rng.uniform(0, 0.8, (16, 1, 1, 1)), size=w0.shape)
    expected = [np.linalg.norm(w1[f] - w0[f]) / np.linalg.norm(w0[f]) for f in range(16)]
    np.testing.assert_allclose(relative_filter_change(w0, w1), expected)


@pytest.mark.parametrize(("before", "after", "message"), [
    ({"conv1": np.ones((2, 3))}, {"conv2": np.ones((2, 3))}, "only in before"),
    ({"conv1": np.ones((2, 3))}, {"conv1": np.ones((2, 4))}, "layer 'conv1': shape changed"),
    ({"conv1": np.ones(3)}, {"conv1": np.ones(3)}, "layer 'conv1': weights must be"),
    ({"conv1": np.full((2, 2), np.nan)}, {"conv1": np.ones((2, 2))}, "layer 'conv1': before: NaN"),
    ({}, {}, "before: no layers"),
])
def test_bad_input_named(before, after, message):
    with pytest.raises(MetricInputError, match=message):
        changed_filters(before, after)
