"""The "luna16" FROC hit rule against the LUNA16 evaluation script (noduleCADEvaluationLUNA16.py,
read, not copied): one hand-made case per way it differs from the kit's "link" rule, each
answer derived by following the script, then random scenes against a re-statement of the
script's procedure (scikit-learn's roc_curve and np.interp, as the script uses them)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medtl.metrics import (
    HIT_RULES,
    LUNA16_FP_RATES,
    LUNA16_MAX_MARKS,
    NO_LESION,
    MetricInputError,
    froc_bootstrap,
    froc_curve,
    hits_within_radius,
    lesions_per_group,
    luna16_marks,
)


def test_rules_are_named():
    assert set(HIT_RULES) == {"link", "luna16"}
    assert LUNA16_MAX_MARKS.value == 100 and not LUNA16_MAX_MARKS.is_assumed


def test_a_mark_inside_two_overlapping_findings_counts_for_both():
    # Findings F0 at x=0 and F1 at x=4, both 10 mm (radius 5). Mark A at x=1 (0.9) lies in
    # both; mark B at x=20 (0.5) in neither. Script: F0 and F1 each list A (0.9) as a match
    # ("CAD mark detected two nodules"), so FROCGTList = [1, 1, 0] with probs [0.9, 0.9, 0.5]:
    # roc_curve -> fpr [0, 0, 1], tpr [0, 1, 1]; fps = fpr * 1 FP / 1 scan, sens = tpr * 2/2.
    pos = [[1.0, 0, 0], [20.0, 0, 0]]
    m = luna16_marks([0.9, 0.5], pos, ["s", "s"], [[0.0, 0, 0], [4.0, 0, 0]], [10.0, 10.0],
                     ["s", "s"])
    assert m.mark.tolist() == [0, 0, 1] and m.lesion_ids.tolist() == [0, 1, NO_LESION]
    curve = m.curve()
    np.testing.assert_allclose(curve.fp_per_group, [0, 0, 1])
    np.testing.assert_allclose(curve.sensitivity, [0, 1, 1])
    assert curve.rule == "luna16"
    # The link rule's nearest-centre helper gives A to F0 only: half the findings.
    links = hits_within_radius(pos, ["s", "s"], [[0.0, 0, 0], [4.0, 0, 0]], [5.0, 5.0],
                               ["s", "s"])
    link = froc_curve([0.9, 0.5], ["s", "s"], links, {"s": 2})
    assert link.sensitivity[-1] == 0.5 and curve.sensitivity_at(1.0)[0] == 1.0


def test_the_radius_test_is_strict():
    # F0 at the origin (10 mm: radius^2 = 25) and F1 at x=50. Mark (3, 4, 0) scores 0.9: its
    # squared distance is exactly 25, not < 25, so the script counts it a false positive and
    # F0 as missed (kept in the denominator only). Mark on F1 scores 0.8. Local lists: GT
    # [1, 0], probs [0.8, 0.9] -> fpr [0, 1, 1], tpr [0, 0, 1]; fps = fpr * 1/1, sens =
    # tpr * 1/2: the curve (0, 0), (1, 0), (1, 0.5).
    pos = [[3.0, 4.0, 0.0], [50.0, 0.0, 0.0]]
    centres, groups = [[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]], ["s", "s"]
    curve = luna16_marks([0.9, 0.8], pos, groups, centres, [10.0, 10.0], groups).curve()
    np.testing.assert_allclose(curve.fp_per_group, [0, 1, 1])
    np.testing.assert_allclose(curve.sensitivity, [0, 0, 0.5])
    np.testing.assert_allclose(curve.sensitivity_at([0.5, 1.0, 8.0]), [0, 0.5, 0.5])
    # The link helper's radius test is <=: the same mark is a hit there.
    assert hits_within_radius(pos, groups, centres, [5.0, 5.0], groups).tolist() == [0, 1]


def test_marks_on_excluded_findings_are_neither_true_nor_false_positives():
    # Included F0 at the origin (10 mm); excluded E at x=30 with diameter -1, which the script
    # replaces by 10 mm. Marks: on F0 (0.6), at x=34 inside E (0.9: dropped from the FP list,
    # "irrelevant"), at x=60 (0.7: FP). Local lists: GT [1, 0], probs [0.6, 0.7] -> the
    # curve (0, 0), (1, 0), (1, 1): sensitivity 1 at 1 FP per scan. Counted as an FP (no
    # excluded list), 0.9 would push F0's hit to 2 FP: sensitivity 0 at 1 FP.
    pos = [[0.0, 0, 0], [34.0, 0, 0], [60.0, 0, 0]]
    args = ([0.6, 0.9, 0.7], pos, ["s"] * 3, [[0.0, 0, 0]], [10.0], ["s"])
    m = luna16_marks(*args, excluded_centres=[[30.0, 0, 0]], excluded_diameters=[-1.0],
                     excluded_groups=["s"])
    assert m.irrelevant == 1 and m.mark.tolist() == [0, 2]
    np.testing.assert_allclose(m.curve().sensitivity_at([1.0]), [1.0])
    np.testing.assert_allclose(luna16_marks(*args).curve().sensitivity_at([1.0]), [0.0])


def test_at_most_max_marks_per_scan_with_the_scripts_tie_rule():
    # Scan a: F0 at the origin; marks 0.9 (FP), 0.7 (FP), 0.7 (on F0), 0.6 (FP). Scan b: F1,
    # one mark on it (0.5). Cap 2: the script sorts a's scores [0.9, 0.7, 0.7, 0.6], takes
    # the third (0.7) and keeps marks strictly above it: only 0.9 (both 0.7s go, so F0 is
    # missed). Curve: 0.9 FP -> (1/2, 0); 0.5 on F1 -> (1/2, 1/2): sensitivity 1/2 at 8 FP.
    pos = [[100.0, 0, 0], [200.0, 0, 0], [0.0, 0, 0], [300.0, 0, 0], [0.0, 0, 0]]
    args = ([0.9, 0.7, 0.7, 0.6, 0.5], pos, ["a"] * 4 + ["b"], [[0.0, 0, 0], [0.0, 0, 0]],
            [10.0, 10.0], ["a", "b"])
    capped = luna16_marks(*args, max_marks=2)
    assert capped.capped == 3 and capped.mark.tolist() == [0, 4]
    np.testing.assert_allclose(capped.curve().fp_per_group, [0, 0.5, 0.5])
    np.testing.assert_allclose(capped.curve().sensitivity_at([8.0]), [0.5])
    # No cap: F0 is found at 0.7 too and the sensitivity reaches 1.
    full = luna16_marks(*args, max_marks=None)
    assert full.capped == 0
    np.testing.assert_allclose(full.curve().sensitivity_at([8.0]), [1.0])
    # The default cap is the script's 100: 101 distinct scores on one scan lose the lowest.
    many = luna16_marks(np.linspace(0.0, 1.0, 101), np.c_[np.arange(101.0) + 50, np.zeros(101)],
                        ["a"] * 101, [[0.0, 0.0]], [10.0], ["a"])
    assert many.capped == 1 and 0 not in many.mark.tolist()


def test_a_set_without_detections_gives_nan_not_zero():
    # Two marks, neither near the finding: the script's local list has no positive, sklearn's
    # roc_curve returns NaN true positive rates, and every sensitivity is NaN.
    args = ([0.9, 0.4], [[40.0, 0, 0], [80.0, 0, 0]], ["s", "s"], [[0.0, 0, 0]], [10.0], ["s"])
    m = luna16_marks(*args, groups=["s", "t"])
    curve = m.curve()
    assert np.isnan(curve.sensitivity).all()
    assert np.isnan(curve.average_sensitivity()) and np.isnan(curve.area())
    boot = m.bootstrap(n_boot=20, seed=0)
    assert np.isnan(boot.sensitivity[3.0].estimate) and np.isnan(boot.area.high)
    assert np.isnan(boot.band_low).all()
    # The link rule counts the same set as sensitivity 0.
    link = froc_curve([0.9, 0.4], ["s", "s"], [-1, -1], {"s": 1, "t": 0})
    assert link.sensitivity_at(8.0)[0] == 0.0


def test_scan_list_and_errors():
    # Scans without marks count in the FP denominator (the script divides by the scan list).
    m = luna16_marks([0.9, 0.3], [[0.0, 0], [9.0, 9]], ["a", "a"], [[0.0, 0]], [4.0], ["a"],
                     groups=["a", "b", "c", "d"])
    assert m.lesions_per_group == {"a": 1, "b": 0, "c": 0, "d": 0}
    np.testing.assert_allclose(m.curve().fp_per_group, [0, 0, 0.25])
    with pytest.raises(MetricInputError, match="scan 'z' has marks or findings"):
        luna16_marks([0.9], [[0.0, 0]], ["z"], [[0.0, 0]], [4.0], ["z"], groups=["a"])
    with pytest.raises(MetricInputError, match="lesion_diameters: NaN"):
        luna16_marks([0.9], [[0.0, 0]], ["a"], [[0.0, 0]], [np.nan], ["a"])
    with pytest.raises(MetricInputError, match="mismatched lengths"):
        luna16_marks([0.9], [[0.0, 0]], ["a"], [[0.0, 0]], [4.0], ["a"],
                     excluded_centres=[[1.0, 1.0]], excluded_groups=[])
    with pytest.raises(MetricInputError, match="kind"):
        luna16_marks([0.9], [[0.0, 0]], ["1"], [[0.0, 0]], [4.0], [1])
    with pytest.raises(MetricInputError, match="rule"):
        froc_curve([0.9], ["a"], [0], {"a": 1}, rule="nearest")


# ------------------------------------------------------------------ the script, restated

def script_froc(scores, pos, groups, centres, diameters, lgroups, ecentres, ediameters,
                egroups, scans, max_marks):
    """(fps, sens) as noduleCADEvaluationLUNA16.evaluateCAD/computeFROC produce them."""
    from sklearn.metrics import roc_curve

    gt, probs, excl = [], [], []
    for scan in scans:
        marks = [i for i, g in enumerate(groups) if g == scan]
        if max_marks and len(marks) > max_marks:
            cut = sorted((scores[i] for i in marks), reverse=True)[max_marks]
            marks = [i for i in marks if scores[i] > cut]
        remaining = set(marks)
        findings = [(c, d, True)
                    for c, d, g in zip(centres, diameters, lgroups, strict=True) if g == scan]
        findings += [(c, d, False)
                     for c, d, g in zip(ecentres, ediameters, egroups, strict=True) if g == scan]
        for centre, diameter, included in findings:
            diameter = 10.0 if diameter < 0 else diameter
            r2 = (diameter / 2.0) ** 2
            matches = []
            for i in marks:
                dist = sum((centre[k] - pos[i][k]) ** 2 for k in range(len(centre)))
                if dist < r2:
                    if included:
                        matches.append(i)
                    remaining.discard(i)
            if included:
                gt.append(1.0)
                probs.append(max(scores[i] for i in matches) if matches else -1e9)
                excl.append(not matches)
        for i in sorted(remaining):
            gt.append(0.0)
            probs.append(scores[i])
            excl.append(False)
    local = [(g, p) for g, p, e in zip(gt, probs, excl, strict=True) if not e]
    gt_local, prob_local = [g for g, _ in local], [p for _, p in local]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fpr, tpr, _ = roc_curve(gt_local, prob_local)
    detected = sum(gt_local)
    fps = (np.zeros(len(fpr)) if sum(gt) == len(gt)
           else fpr * (len(gt_local) - detected) / len(scans))
    with np.errstate(invalid="ignore"):
        sens = tpr * detected / sum(gt)
    return fps, sens


@pytest.mark.parametrize("seed", range(12))
def test_random_scenes_equal_the_script(seed):
    rng = np.random.default_rng(seed)
    scans = [f"scan{i}" for i in range(4)]
    n, k, e = 40, 7, 3
    pos = rng.integers(0, 12, size=(n, 3)).astype(float)       # integer grid: exact ties
    groups = rng.choice(scans[:3], size=n).tolist()            # scan3: no marks
    scores = np.round(rng.random(n), 1)                        # tied scores
    centres = rng.integers(0, 12, size=(k, 3)).astype(float)
    diameters = rng.choice([2.0, 4.0, 6.0, 10.0], size=k)
    lgroups = rng.choice(scans, size=k).tolist()
    ecentres = rng.integers(0, 12, size=(e, 3)).astype(float)
    ediameters = rng.choice([-1.0, 4.0], size=e)
    egroups = rng.choice(scans, size=e).tolist()
    max_marks = int(rng.choice([3, 5, 100]))
    m = luna16_marks(scores, pos, groups, centres, diameters, lgroups, scans,
                     excluded_centres=ecentres, excluded_diameters=ediameters,
                     excluded_groups=egroups, max_marks=max_marks)
    assert m.lesions_per_group == {**dict.fromkeys(scans, 0), **lesions_per_group(lgroups)}
    fps, sens = script_froc(scores.tolist(), pos.tolist(), groups, centres.tolist(),
                            diameters.tolist(), lgroups, ecentres.tolist(),
                            ediameters.tolist(), egroups, scans, max_marks)
    rates = np.r_[LUNA16_FP_RATES.value, 0.0, 0.3, 3.0]
    expected = np.interp(rates, fps, sens)
    np.testing.assert_allclose(m.curve().sensitivity_at(rates), expected, atol=1e-12,
                               equal_nan=True)
    boot = froc_bootstrap(m.scores, m.groups, m.lesion_ids, m.lesions_per_group,
                          rule="luna16", n_boot=30, seed=1)
    np.testing.assert_allclose(boot.sensitivity[3.0].estimate, np.interp(3.0, fps, sens),
                               atol=1e-12, equal_nan=True)
