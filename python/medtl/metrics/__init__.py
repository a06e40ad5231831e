"""Evaluation metrics in pure NumPy/SciPy (no Caffe): FROC, ROC with DeLong and bootstrap
intervals, classification scores, boundary error and Dice, filter-change counts.

Conventions (details in each module's docstring):
- FROC (`froc`): two hit rules, "link" (caller-given candidate -> lesion links, the kit's
  default) and "luna16" (the LUNA16 evaluation script, `luna16_marks`); FP per group
  (patient/volume/scan); sensitivity at an FP rate by linear interpolation (assumed); area
  normalised over [0, max_fp], default 8 (assumed); average sensitivity at 1/8..8 FP.
- ROC (`roc`): AUC with ties counted 1/2 (= scikit-learn); DeLong variance/test; operating
  points at 10/15/20% FPR (Tajbakhsh 2016).
- Intervals (`bootstrap`): 95% percentile bootstrap over groups, seeded; two curves differ
  at an operating point when their intervals do not overlap (Tajbakhsh 2016).
"""

from medtl.metrics._validate import MetricInputError
from medtl.metrics.bootstrap import (
    BOOTSTRAP_METHOD,
    CONFIDENCE_LEVEL,
    N_BOOT,
    SEED,
    Interval,
    differ,
)
from medtl.metrics.classification import (
    ClassScores,
    accuracy,
    confusion_matrix,
    multilabel_confusion,
    per_class_scores,
    row_normalised,
)
from medtl.metrics.filters import (
    FILTER_CHANGE,
    LayerChange,
    changed_filters,
    relative_filter_change,
)
from medtl.metrics.froc import (
    AREA_MAX_FP,
    HIT_RULES,
    LUNA16_FP_RATES,
    LUNA16_MAX_MARKS,
    NO_LESION,
    SHIN_FP_RATE,
    FrocBootstrap,
    FrocCurve,
    Luna16Marks,
    froc_bootstrap,
    froc_curve,
    hits_within_radius,
    lesions_per_group,
    luna16_marks,
)
from medtl.metrics.roc import (
    OPERATING_FPRS,
    DelongAuc,
    DelongTest,
    RocBootstrap,
    RocCurve,
    delong_auc,
    delong_test,
    roc_auc,
    roc_bootstrap,
    roc_curve,
    sensitivity_at_fpr,
)
from medtl.metrics.segmentation import (
    LOCALISATION_DICE,
    TUKEY_WHISKER,
    BoxStats,
    boundary_error,
    box_dice,
    box_stats,
    dice,
    interface_error_table,
    interface_errors,
    localisation_failures,
)
from medtl.metrics.summary import auc_interval, interval, wilson

__all__ = [
    "AREA_MAX_FP", "BOOTSTRAP_METHOD", "CONFIDENCE_LEVEL", "FILTER_CHANGE", "HIT_RULES",
    "LOCALISATION_DICE", "LUNA16_FP_RATES", "LUNA16_MAX_MARKS", "NO_LESION", "N_BOOT",
    "OPERATING_FPRS", "SEED", "SHIN_FP_RATE", "TUKEY_WHISKER", "BoxStats", "ClassScores",
    "DelongAuc", "DelongTest", "FrocBootstrap", "FrocCurve", "Interval", "LayerChange",
    "Luna16Marks", "MetricInputError", "RocBootstrap", "RocCurve", "accuracy", "auc_interval",
    "boundary_error", "box_dice", "box_stats", "changed_filters", "confusion_matrix", "delong_auc",
    "delong_test", "dice", "differ", "froc_bootstrap", "froc_curve", "hits_within_radius",
    "interface_error_table", "interface_errors", "interval", "lesions_per_group",
    "localisation_failures", "luna16_marks", "multilabel_confusion", "per_class_scores",
    "relative_filter_change", "roc_auc", "roc_bootstrap", "roc_curve", "row_normalised",
    "sensitivity_at_fpr", "wilson"
]
