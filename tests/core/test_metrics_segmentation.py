"""Boundary error per interface, box-plot statistics, Dice and localisation failures."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.metrics import (
    LOCALISATION_DICE,
    MetricInputError,
    boundary_error,
    box_dice,
    box_stats,
    dice,
    interface_error_table,
    interface_errors,
    localisation_failures,
)


def test_boundary_error_hand_worked():
    # Column-wise |10-11|, |12-12|, |14.5-13| = 1, 0, 1.5 -> mean 2.5/3; at 0.1 mm per pixel.
    assert boundary_error([10, 12, 14.5], [11, 12, 13]) == pytest.approx(2.5 / 3)
    assert boundary_error([10, 12, 14.5], [11, 12, 13], pixel_size=0.1) == pytest.approx(0.25 / 3)


def test_interface_errors_and_table():
    image1 = {"lumen-intima": [5, 5, 5], "media-adventitia": [9, 9, 9]}
    expert1 = {"lumen-intima": [5, 6, 7], "media-adventitia": [9, 9, 8]}
    image2 = {"lumen-intima": [1, 1], "media-adventitia": [4, 4]}
    expert2 = {"lumen-intima": [1, 1], "media-adventitia": [2, 6]}
    # Image 1: LI (0 + 1 + 2)/3 = 1, MA (0 + 0 + 1)/3 = 1/3. Image 2: LI 0, MA (2 + 2)/2 = 2.
    assert interface_errors(image1, expert1) == pytest.approx(
        {"lumen-intima": 1.0, "media-adventitia": 1 / 3})
    table = interface_error_table([image1, image2], [expert1, expert2])
    np.testing.assert_allclose(table["lumen-intima"], [1.0, 0.0])
    np.testing.assert_allclose(table["media-adventitia"], [1 / 3, 2.0])


def test_box_stats_tukey():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 100]
    # Quartiles (linear): q1 3, median 5, q3 7; IQR 4, fences -3 and 13: 100 is an outlier,
    # whiskers 1 and 8. Mean 136/9.
    stats = box_stats(values)
    assert (stats.q1, stats.median, stats.q3) == (3.0, 5.0, 7.0)
    assert (stats.whisker_low, stats.whisker_high) == (1.0, 8.0)
    np.testing.assert_array_equal(stats.outliers, [100.0])
    assert stats.mean == pytest.approx(136 / 9)
    assert stats.std == pytest.approx(np.std(values, ddof=1))
    assert stats.n == 9


def test_dice_hand_worked():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True        # 4 pixels
    b[1:3, :2] = True       # 4 pixels, 2 shared -> 2*2/(4+4) = 0.5
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    # Boxes (x, y, w, h): (0, 0, 10, 10) and (5, 0, 10, 10) overlap 5 x 10 = 50 -> 100/200.
    assert box_dice([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(0.5)
    assert box_dice([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0


def test_localisation_failures():
    # Below 0.80 fails; exactly 0.80 does not (Ravishankar: "Dice less than 0.80").
    scores = [0.95, 0.80, 0.79, 0.5, 0.81]
    assert LOCALISATION_DICE.value == 0.80 and "Ravishankar" in LOCALISATION_DICE.source
    assert localisation_failures(scores) == 2
    assert localisation_failures(scores, threshold=0.9) == 4


@pytest.mark.parametrize(("call", "message"), [
    (lambda: boundary_error([1, 2], [1, 2, 3]), "mismatched lengths"),
    (lambda: boundary_error([1, np.nan], [1, 2]), "predicted: NaN"),
    (lambda: boundary_error([1, 2], [1, 2], pixel_size=0), "pixel_size"),
    (lambda: interface_errors({"li": [1]}, {"ma": [1]}), "interfaces"),
    (lambda: interface_errors({"li": [1]}, {"li": []}), "interface 'li': expert: empty"),
    (lambda: dice(np.zeros((2, 2)), np.zeros((2, 3))), "mismatched shapes"),
    (lambda: dice([0, 2], [0, 1]), "mask_a: expected a boolean"),
    (lambda: box_dice([0, 0, -1, 1], [0, 0, 1, 1]), "box_a: sizes"),
    (lambda: localisation_failures([0.5, 1.2]), "dice_scores"),
    (lambda: localisation_failures([]), "dice_scores: empty"),
])
def test_bad_input_named(call, message):
    with pytest.raises(MetricInputError, match=message):
        call()
