"""ROC metrics: hand-worked cases, scikit-learn as the reference, DeLong by hand and against the
bootstrap, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medtl.metrics import (
    MetricInputError,
    delong_auc,
    delong_test,
    differ,
    roc_auc,
    roc_bootstrap,
    roc_curve,
    sensitivity_at_fpr,
)

# Tiny case with a tie: positives X = (0.9, 0.6, 0.4), negatives Y = (0.7, 0.4).
TINY_LABELS = [1, 1, 1, 0, 0]
TINY_SCORES = [0.9, 0.6, 0.4, 0.7, 0.4]


def tied_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes many ties
    return labels, scores


def test_auc_hand_worked_with_tie():
    # Pairs (x, y): 0.9 beats both; 0.6 beats 0.4 only; 0.4 ties 0.4 (1/2).
    # AUC = (2 + 1 + 0.5) / (3 * 2) = 3.5 / 6 = 7/12.
    assert roc_auc(TINY_LABELS, TINY_SCORES) == pytest.approx(7 / 12)


def test_curve_hand_worked():
    # Thresholds 0.9, 0.7, 0.6, 0.4 (desc). TPR/FPR after each: 0.9 -> (1/3, 0);
    # 0.7 -> (1/3, 1/2); 0.6 -> (2/3, 1/2); 0.4 -> (1, 1) (tie: one pos and one neg at once).
    curve = roc_curve(TINY_LABELS, TINY_SCORES)
    np.testing.assert_allclose(curve.fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(curve.thresholds, [np.inf, 0.9, 0.7, 0.6, 0.4])
    # At FPR 0.5 the top of the vertical segment: 2/3. At 0.75, halfway along the diagonal
    # tie segment (0.5, 2/3) -> (1, 1): 2/3 + 0.5 * 1/3 = 5/6; "step" stays at 2/3.
    np.testing.assert_allclose(curve.sensitivity_at([0.5, 0.75]), [2 / 3, 5 / 6])
    np.testing.assert_allclose(curve.sensitivity_at([0.75], "step"), [2 / 3])
    # At FPR 0.25: between (0, 1/3) and (0.5, 1/3) -> 1/3.
    assert sensitivity_at_fpr(TINY_LABELS, TINY_SCORES, [0.25]) == {0.25: pytest.approx(1 / 3)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_curve_equal_sklearn_with_ties(seed):
    labels, scores = tied_data(400, seed)
    assert roc_auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    curve = roc_curve(labels, scores)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    # scikit-learn's default (collinear points dropped) is a subset of our points, and linear
    # reading between its points gives the same sensitivity as ours away from vertical jumps.
    fpr_d, tpr_d, _ = skm.roc_curve(labels, scores)
    ours = set(zip(np.round(curve.fpr, 12), np.round(curve.tpr, 12), strict=True))
    assert set(zip(np.round(fpr_d, 12), np.round(tpr_d, 12), strict=True)) <= ours


def test_delong_variance_hand_worked():
    # Structural components: V10 per positive (share of negatives below, ties 1/2):
    # 0.9 -> 1, 0.6 -> 1/2, 0.4 -> 1/4; V01 per negative (share of positives above):
    # 0.7 -> 1/3, 0.4 -> (1 + 1 + 1/2)/3 = 5/6.
    # S10 = var(1, 1/2, 1/4; ddof 1): mean 7/12, squares (25 + 1 + 16)/144 = 42/144, /2 = 7/48.
    # S01 = var(1/3, 5/6): mean 7/12, squares 2 * 9/144 = 1/8, /1 = 1/8.
    # Var = S10/m + S01/n = 7/144 + 1/16 = 16/144 = 1/9.
    result = delong_auc(TINY_LABELS, TINY_SCORES)
    assert result.auc == pytest.approx(7 / 12)
    assert result.variance == pytest.approx(1 / 9)
    half = 1.959963984540054 * (1 / 3)
    assert result.interval.low == pytest.approx(max(0.0, 7 / 12 - half))
    assert result.interval.high == pytest.approx(1.0)  # 7/12 + 0.653 clipped to 1


def test_delong_test_hand_worked():
    # Identical scorers: difference 0, no variance, p = 1.
    same = delong_test(TINY_LABELS, TINY_SCORES, TINY_SCORES)
    assert (same.difference, same.variance, same.p_value) == (0.0, 0.0, 1.0)
    # Negated scores: every kernel psi becomes 1 - psi, so AUC_b = 1 - 7/12 = 5/12, the
    # components are perfectly anti-correlated, and Var(A - B) = 4 Var(A) = 4/9.
    flipped = delong_test(TINY_LABELS, TINY_SCORES, -np.asarray(TINY_SCORES))
    assert flipped.auc_b == pytest.approx(5 / 12)
    assert flipped.difference == pytest.approx(1 / 6)
    assert flipped.variance == pytest.approx(4 / 9)
    assert flipped.z == pytest.approx((1 / 6) / (2 / 3))


def test_delong_against_bootstrap_variance():
    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(200, int), np.zeros(200, int)]
    a = rng.normal(labels * 1.0, 1.0)
    b = a + rng.normal(0.0, 0.8, a.size)  # a correlated, noisier second scorer
    boot_a = roc_bootstrap(labels, a, n_boot=1500, seed=3)
    boot_b = roc_bootstrap(labels, b, n_boot=1500, seed=3)  # same seed: paired resamples
    single = delong_auc(labels, a)
    assert np.var(boot_a.auc_replicates, ddof=1) / single.variance == pytest.approx(1, abs=0.2)
    test = delong_test(labels, a, b)
    paired = np.var(boot_a.auc_replicates - boot_b.auc_replicates, ddof=1)
    assert paired / test.variance == pytest.approx(1, abs=0.25)
    assert test.p_value < 0.05  # b is clearly worse


def test_bootstrap_over_groups_seeded_and_sane():
    labels, scores = tied_data(300, 7)
    groups = np.repeat(np.arange(30), 10)
    first = roc_bootstrap(labels, scores, groups, n_boot=300, seed=11)
    again = roc_bootstrap(labels, scores, groups, n_boot=300, seed=11)
    other = roc_bootstrap(labels, scores, groups, n_boot=300, seed=12)
    assert first.auc == again.auc and first.sensitivity == again.sensitivity
    np.testing.assert_array_equal(first.band_low, again.band_low)
    assert first.auc != other.auc
    assert first.resampled == "groups" and first.auc.n_valid == 300
    assert first.auc.low < first.auc.estimate < first.auc.high
    assert sorted(first.sensitivity) == [0.10, 0.15, 0.20]
    for f, interval in first.sensitivity.items():
        assert interval.estimate == pytest.approx(
            sensitivity_at_fpr(labels, scores, [f])[f])
        assert interval.low <= interval.estimate <= interval.high
    assert (first.band_low <= first.tpr + 1e-12).all()
    assert (first.tpr <= first.band_high + 1e-12).all()


def test_interval_overlap_rule():
    labels, scores = tied_data(300, 8)
    good = roc_bootstrap(labels, scores + 3 * labels, n_boot=200, seed=0)
    bad = roc_bootstrap(labels, scores, n_boot=200, seed=0)
    assert differ(good.auc, bad.auc)
    assert not differ(bad.auc, bad.auc)


@pytest.mark.parametrize(("labels", "scores", "message"), [
    ([1, 0, 1], [0.1, 0.2], "mismatched lengths"),
    ([], [], "labels: empty"),
    ([1, 2, 0], [0.1, 0.2, 0.3], "labels: labels must be 0/1"),
    ([1, 0, 1], [0.1, np.nan, 0.3], "scores: NaN"),
    ([1, 1, 1], [0.1, 0.2, 0.3], "only positive"),
])
def test_bad_input_named(labels, scores, message):
    with pytest.raises(MetricInputError, match=message):
        roc_auc(labels, scores)


def test_delong_needs_two_per_class():
    with pytest.raises(MetricInputError, match="at least 2 positives"):
        delong_auc([1, 0, 0], [0.9, 0.1, 0.2])
    with pytest.raises(MetricInputError, match="groups=2"):
        roc_bootstrap([1, 1, 0, 0], [1, 2, 3, 4], groups=["a", "b"], n_boot=10)
    with pytest.raises(MetricInputError, match="fprs"):
        roc_bootstrap([1, 1, 0, 0], [1, 2, 3, 4], fprs=[1.5], n_boot=10)
    with pytest.raises(MetricInputError, match="level"):
        delong_auc([1, 1, 0, 0], [1, 2, 3, 4], level=95)
    with pytest.raises(MetricInputError, match="scores_b"):
        delong_test([1, 1, 0, 0], [1, 2, 3, 4], [1, 2, 3])
