"""FROC: the hit rule, a hand-worked curve and its summaries, bootstrap determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.metrics import (
    NO_LESION,
    MetricInputError,
    froc_bootstrap,
    froc_curve,
    hits_within_radius,
    lesions_per_group,
)

# Four patients: A has 2 lesions, B 1, C 1 (never hit), D none and no candidates.
# A: 0.9 hits A0 (its best hit: TP), 0.8 hits A0 again (neither TP nor FP), 0.7 FP,
#    0.4 hits A1 (TP), 0.1 FP.  B: 0.4 FP (ties with A1's hit), 0.65 hits B0 (TP).  C: 0.3 FP.
SCORES = [0.9, 0.8, 0.7, 0.4, 0.1, 0.4, 0.65, 0.3]
GROUPS = ["A", "A", "A", "A", "A", "B", "B", "C"]
LESIONS = [0, 0, -1, 1, -1, -1, 0, -1]
PER_GROUP = {"A": 2, "B": 1, "C": 1}
N_GROUPS = 4  # D is counted in the FP denominator only


def hand_curve():
    return froc_curve(SCORES, GROUPS, LESIONS, PER_GROUP, n_groups=N_GROUPS)


def test_curve_hand_worked():
    # Events by threshold (TP of 4 lesions, FP over 4 patients):
    # inf (0, 0); 0.9 TP -> (0, 1/4); 0.7 FP -> (1/4, 1/4); 0.65 TP -> (1/4, 2/4);
    # 0.4 TP + FP together -> (2/4, 3/4); 0.3 FP -> (3/4, 3/4); 0.1 FP -> (1, 3/4).
    # The 0.8 second hit on A0 is no event at all.
    curve = hand_curve()
    np.testing.assert_allclose(curve.fp_per_group, [0, 0, 0.25, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.sensitivity, [0, 0.25, 0.25, 0.5, 0.75, 0.75, 0.75])
    np.testing.assert_array_equal(curve.thresholds, [np.inf, 0.9, 0.7, 0.65, 0.4, 0.3, 0.1])
    assert (curve.n_groups, curve.n_lesions) == (4, 4)


def test_sensitivity_at_fp_conventions():
    curve = hand_curve()
    # 0.25 FP: top of the vertical segment (1/4, 1/4) -> (1/4, 1/2): 0.5.
    # 0.375 FP: linear between (1/4, 1/2) and (1/2, 3/4): 0.625; step keeps 0.5.
    # 3 FP: past the last point (1, 3/4): held at 0.75.
    np.testing.assert_allclose(curve.sensitivity_at([0.25, 0.375, 3.0]), [0.5, 0.625, 0.75])
    np.testing.assert_allclose(curve.sensitivity_at([0.375], "step"), [0.5])


def test_area_and_average_sensitivity_hand_worked():
    curve = hand_curve()
    # Area over [0, 1]: 0.25 * 0.25 (flat) + 0.25 * (0.5 + 0.75) / 2 (diagonal) + 0.25 * 0.75
    # + 0.25 * 0.75 = 0.0625 + 0.15625 + 0.1875 + 0.1875 = 0.59375; / 1.
    assert curve.area(1.0) == pytest.approx(0.59375)
    # Over [0, 2]: + 1 * 0.75 (held flat) = 1.34375; / 2 = 0.671875.
    assert curve.area(2.0) == pytest.approx(0.671875)
    # LUNA16 rates 1/8, 1/4, 1/2, 1, 2, 4, 8 -> 0.25, 0.5, 0.75, 0.75 x 4: mean 4.5 / 7.
    assert curve.average_sensitivity() == pytest.approx(4.5 / 7)


def test_hits_within_radius():
    positions = [[0, 0, 0], [3, 4, 0], [5.1, 0, 0], [9, 0, 0], [0, 0, 0]]
    groups = ["p1", "p1", "p1", "p1", "p2"]
    centres = [[0, 0, 0], [10, 0, 0], [0, 0, 1]]
    radii = [5.0, 2.0, 5.0]
    lesion_groups = ["p1", "p1", "p3"]
    hits = hits_within_radius(positions, groups, centres, radii, lesion_groups)
    # (3, 4, 0) is exactly 5 from lesion 0: inside (<=). (5.1, 0, 0) is 5.1 from lesion 0 and
    # 4.9 from lesion 1 (radius 2): a miss. (9, 0, 0) is 1 from lesion 1. The p2 candidate
    # sits on a p3 lesion: other patients' lesions never count.
    np.testing.assert_array_equal(hits, [0, 0, NO_LESION, 1, NO_LESION])
    assert lesions_per_group(lesion_groups, ["p2"]) == {"p2": 0, "p1": 2, "p3": 1}


def test_hits_nearest_lesion_wins():
    hits = hits_within_radius([[1.0, 0.0], [2.6, 0.0]], ["a", "a"], [[0.0, 0.0], [4.0, 0.0]],
                              [3.0, 3.0], ["a", "a"])
    # Both candidates lie within reach of both lesions; 1.0 is nearer lesion 0, 2.6 lesion 1.
    np.testing.assert_array_equal(hits, [0, 1])


def test_curve_from_hit_rule_end_to_end():
    positions = [[0, 0], [1, 0], [20, 0], [50, 50]]
    groups = [1, 1, 1, 2]
    lesion_groups = [1, 2]
    hits = hits_within_radius(positions, groups, [[0, 0], [0, 0]], [3.0, 3.0], lesion_groups)
    curve = froc_curve([0.2, 0.9, 0.5, 0.8], groups, hits, lesions_per_group(lesion_groups))
    # Lesion 1-0 found at 0.9 (0.2 is a second hit); 0.8 and 0.5 are FPs; lesion 2-1 missed.
    np.testing.assert_allclose(curve.fp_per_group, [0, 0, 0.5, 1.0])
    np.testing.assert_allclose(curve.sensitivity, [0, 0.5, 0.5, 0.5])


def test_bootstrap_seeded_and_consistent():
    rng = np.random.default_rng(0)
    n_patients = 30
    groups = np.repeat(np.arange(n_patients), 12)
    lesions = np.tile(np.r_[0, 1, 2, -1, -1, -1, -1, -1, -1, -1, -1, -1], n_patients)
    scores = rng.normal(np.where(lesions >= 0, 1.5, 0.0), 1.0)
    per_group = dict.fromkeys(range(n_patients), 3)
    run = {"fp_rates": [1.0, 3.0], "max_fp": 4.0, "n_boot": 300}
    first = froc_bootstrap(scores, groups, lesions, per_group, seed=4, **run)
    again = froc_bootstrap(scores, groups, lesions, per_group, seed=4, **run)
    other = froc_bootstrap(scores, groups, lesions, per_group, seed=5, **run)
    assert first.sensitivity == again.sensitivity and first.area == again.area
    np.testing.assert_array_equal(first.band_high, again.band_high)
    assert first.area != other.area
    curve = froc_curve(scores, groups, lesions, per_group)
    assert first.sensitivity[3.0].estimate == pytest.approx(curve.sensitivity_at(3.0)[0])
    assert first.area.estimate == pytest.approx(curve.area(4.0))
    assert first.average_sensitivity.estimate == pytest.approx(curve.average_sensitivity())
    for interval in (*first.sensitivity.values(), first.area, first.average_sensitivity):
        assert interval.low < interval.estimate < interval.high
        assert interval.n_valid == 300
    assert (first.band_low <= first.sensitivity_grid + 1e-12).all()
    assert (first.sensitivity_grid <= first.band_high + 1e-12).all()


def test_bootstrap_skips_replicates_without_lesions():
    # One patient of three holds the only lesion: about (2/3)^3 = 30% of resamples miss it.
    result = froc_bootstrap([0.9, 0.2, 0.3], ["a", "b", "c"], [0, -1, -1],
                            {"a": 1, "b": 0, "c": 0}, n_boot=400, seed=1)
    assert 200 < result.area.n_valid < 340


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scores": [0.1, 0.2]}, "mismatched lengths"),
    ({"scores": [0.1, np.nan, 0.3]}, "scores: NaN"),
    ({"lesion_ids": [0.0, -1.0, -1.0]}, "lesion_ids: expected integers"),
    ({"lesion_ids": [0, -2, -1]}, "lesion_ids: negative"),
    ({"per_group": {"a": 1, "b": 0}}, "groups: 'c' has candidates"),
    ({"per_group": {"a": 0, "b": 0, "c": 0}}, "no lesions"),
    ({"lesion_ids": [0, 1, -1]}, "hits on 2 distinct lesions"),
    ({"n_groups": 2}, "n_groups: 2 is fewer"),
])
def test_bad_input_named(kwargs, message):
    args = {"scores": [0.9, 0.2, 0.3], "groups": ["a", "a", "c"], "lesion_ids": [0, -1, -1],
            "per_group": {"a": 1, "b": 0, "c": 0}, "n_groups": None}
    args.update(kwargs)
    with pytest.raises(MetricInputError, match=message):
        froc_curve(args["scores"], args["groups"], args["lesion_ids"], args["per_group"],
                   args["n_groups"])


def test_bad_summary_arguments():
    curve = hand_curve()
    with pytest.raises(MetricInputError, match="max_fp"):
        curve.area(0.0)
    with pytest.raises(MetricInputError, match="interpolation"):
        curve.sensitivity_at(1.0, "cubic")
    with pytest.raises(MetricInputError, match="fp: must be finite and >= 0"):
        curve.sensitivity_at(-1.0)
    with pytest.raises(MetricInputError, match="fp_rates: FP rates must be >= 0"):
        froc_bootstrap(SCORES, GROUPS, LESIONS, PER_GROUP, fp_rates=[-1.0], n_boot=10)
    with pytest.raises(MetricInputError, match="interpolation"):
        froc_bootstrap(SCORES, GROUPS, LESIONS, PER_GROUP, interpolation="cubic", n_boot=10)
    with pytest.raises(MetricInputError, match="n_boot"):
        froc_bootstrap(SCORES, GROUPS, LESIONS, PER_GROUP, n_boot=0)
    with pytest.raises(MetricInputError, match="lesion_radii"):
        hits_within_radius([[0, 0]], ["a"], [[0, 0]], [0.0], ["a"])
