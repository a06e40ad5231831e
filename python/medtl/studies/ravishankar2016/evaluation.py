"""How a selected CaffeNet becomes Ravishankar 2016's Table 1 and Table 2 numbers.

1. CNN features (`evaluation.feature_blob`, fc7) of the train / val / test patches with the
   selected weights (`medtl.datasets.features.extract`), and the dataset's Haar features of
   the same patches (same rank order).
2. A seeded GradientBoostingClassifier per feature set: the blob's, Haar, both concatenated,
   fitted on the training patches; accuracy and ROC AUC on the test patches.
3. Localisation: every test image is covered by sliding boxes of the training kidneys' mean
   size (at a few scales); the box the GBM scores highest is the detection, a failure when
   its Dice with the ground-truth kidney box is below 0.80 (`metrics.localisation_failures`).
   The boxes' CNN features come from `medtl.infer.ArrayNet` with the training mean image.
4. Table 2: filters per layer whose weights moved by more than 40% relative L2 from the
   source (ImageNet, or stand-in) weights (`metrics.changed_filters`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.config import ConfigError, option
from medtl.datasets.formats.images import image_size
from medtl.errors import InputError
from medtl.experiments.report.context import read_csv
from medtl.infer import ArrayNet
from medtl.metrics import (
    FILTER_CHANGE,
    LOCALISATION_DICE,
    auc_interval,
    box_dice,
    changed_filters,
    localisation_failures,
)
from medtl.nets.registry import get_model
from medtl.provenance import assumed, paper
from medtl.studies.ravishankar2016.dataset import render_boxes, sliding_boxes
from medtl.studies.ravishankar2016.haar import HaarBank
from medtl.surgery import read_weights

SEC2 = "Ravishankar 2016 Sec. 2 (via the review)"
ROLES = ("train", "val", "test")
DETECTION_RULE = ("one detection per test image: the sliding box with the highest GBM "
                  "probability; its Dice is the best over the image's ground-truth kidney "
                  "boxes (assumed: the review does not say how an image with two kidneys "
                  "is scored)")


@dataclass(frozen=True)
class KidneyEvaluation:
    """How the selected network is turned into Table 1 and Table 2 numbers
    (`dataset.options.evaluation`; they change a run's numbers, not its dataset)."""

    feature_blob: str = option("fc7", "CNN blob whose activations feed the GBM",
                               paper("fc7", f"{SEC2}: 'only use the feature after fc7', "
                                            "4096 dimensions"))
    gbm_estimators: int = option(100, "boosting stages of the GBM", assumed(
        100, "not given; scikit-learn's default n_estimators"), minimum=1)
    gbm_learning_rate: float = option(0.1, "GBM shrinkage", assumed(
        0.1, "not given; scikit-learn's default learning_rate"), minimum=0,
        exclusive_minimum=True)
    gbm_max_depth: int = option(3, "depth of each GBM tree", assumed(
        3, "not given; scikit-learn's default max_depth"), minimum=1)
    gbm_subsample: float = option(1.0, "share of the training patches each tree sees",
                                  assumed(1.0, "not given; scikit-learn's default"),
                                  minimum=0, exclusive_minimum=True, maximum=1)
    window_scales: list[float] = option(
        [0.8, 0.9, 1.0, 1.1, 1.25], "sliding-box sizes as factors of the training kidneys' "
        "mean box", assumed([0.8, 0.9, 1.0, 1.1, 1.25], "not given; sizes around a typical "
                            "kidney, so the best box can reach Dice 0.8 on kidneys of other "
                            "sizes"), minimum=0, exclusive_minimum=True, non_empty=True)
    window_stride: float = option(0.1, "sliding-box step as a share of the box side",
                                  assumed(0.1, "not given; the training positives' jitter "
                                               "(KidneyConfig.jitter)"),
                                  minimum=0, exclusive_minimum=True, maximum=1)
    batch: int = option(50, "patches per forward pass (speed only)", minimum=1)


def gbm(ev: KidneyEvaluation, seed: int) -> Any:
    """The seeded gradient boosting machine of `ev`."""
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(
        n_estimators=ev.gbm_estimators, learning_rate=ev.gbm_learning_rate,
        max_depth=ev.gbm_max_depth, subsample=ev.gbm_subsample, random_state=seed)


def feature_sets(blob: str, cnn: dict[str, np.ndarray], haar: dict[str, np.ndarray] | None
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Feature set name -> role -> features: the blob's, and with Haar features also Haar and
    both concatenated."""
    sets = {blob: cnn}
    if haar is not None:
        sets["haar"] = haar
        sets[f"{blob}+haar"] = {r: np.hstack([cnn[r], haar[r]]) for r in ROLES}
    return sets


def fit_and_score(sets: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                  ev: KidneyEvaluation, seed: int
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, dict]]:
    """(classifiers, test scores, per-set numbers) of a GBM per feature set."""
    classifiers, scores, per_set = {}, {}, {}
    for name, x in sets.items():
        clf = gbm(ev, seed).fit(x["train"], labels["train"])
        classifiers[name] = clf
        scores[name] = clf.predict_proba(x["test"])[:, 1]
        per_set[name] = {
            "test_accuracy": float((clf.predict(x["test"]) == labels["test"]).mean()),
            "val_accuracy": float((clf.predict(x["val"]) == labels["val"]).mean()),
            "test_roc_auc": auc_interval(labels["test"], scores[name]),
        }
    return classifiers, scores, per_set


def window_sizes(dataset_dir: Path, scales: list[float]) -> list[tuple[float, float]]:
    """Sliding-box sizes: the training kidneys' mean box (the manifest boxes themselves,
    sample ids ending ':pos0') times each scale."""
    index = dataset_dir / "train_index.csv"
    rows = [r for r in read_csv(index)
            if r["label"] == "1" and r["candidate_id"].endswith(":pos0")]
    if not rows:
        raise InputError(f"{index}: no training kidney box")
    w = float(np.mean([float(r["x1"]) - float(r["x0"]) for r in rows]))
    h = float(np.mean([float(r["y1"]) - float(r["y0"]) for r in rows]))
    return [(w * s, h * s) for s in scales]


@dataclass(frozen=True)
class Localiser:
    """What scores the sliding boxes of one run: the CNN, the Haar bank and the GBMs."""

    net: ArrayNet
    bank: HaarBank | None
    classifiers: dict[str, Any]
    ev: KidneyEvaluation
    patch_size: int

    def scores(self, image: Path, boxes: np.ndarray) -> dict[str, np.ndarray]:
        """Each feature set's GBM probability of every box of `image`."""
        ev, blob = self.ev, self.ev.feature_blob
        scores = {name: np.empty(len(boxes)) for name in self.classifiers}
        for start in range(0, len(boxes), 4 * ev.batch):
            chunk = slice(start, start + 4 * ev.batch)
            patches = render_boxes(image, boxes[chunk], self.patch_size)
            feats = {blob: self.net(patches, blob, batch=ev.batch)}
            if self.bank is not None:
                feats["haar"] = self.bank.compute(patches)
                feats[f"{blob}+haar"] = np.hstack([feats[blob], feats["haar"]])
            for name, clf in self.classifiers.items():
                scores[name][chunk] = clf.predict_proba(feats[name])[:, 1]
        return scores


def localise(loc: Localiser, dataset_dir: Path, where: str) -> list[dict[str, Any]]:
    """Per test image and feature set: the detected box and its Dice (`where` names the
    spec for an error in `evaluation.window_scales`)."""
    kidneys: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv(dataset_dir / "test_images.csv"):
        kidneys[row["image"]].append(row)
    sizes = window_sizes(dataset_dir, loc.ev.window_scales)
    out = []
    for image, truth in sorted(kidneys.items()):
        width, height = image_size(Path(image))
        boxes = sliding_boxes(width, height, sizes, loc.ev.window_stride)
        if not len(boxes):
            raise ConfigError(f"{where}.window_scales: {image} is {width} x {height} pixels, "
                              "smaller than every sliding box")
        gt = [tuple(float(t[k]) for k in ("x0", "y0", "x1", "y1")) for t in truth]
        for name, s in loc.scores(Path(image), boxes).items():
            best = boxes[int(np.argmax(s))]
            d = max(box_dice(_xywh(best), _xywh(g)) for g in gt)
            out.append({"image": image, "patient_id": truth[0]["patient_id"],
                        "feature_set": name, "boxes_scored": len(boxes),
                        "x0": round(float(best[0]), 2), "y0": round(float(best[1]), 2),
                        "x1": round(float(best[2]), 2), "y1": round(float(best[3]), 2),
                        "score": float(s.max()), "dice": round(d, 4)})
    return out


def score_localisation(located: list[dict[str, Any]], per_set: dict[str, dict]) -> None:
    """Add each feature set's localisation failures and median Dice to `per_set`."""
    for name, entry in per_set.items():
        dice = np.array([r["dice"] for r in located if r["feature_set"] == name])
        entry["localisation_failures"] = localisation_failures(dice)
        entry["localisation_images"] = int(dice.size)
        entry["median_dice"] = float(np.median(dice))
        entry["dice_threshold"] = LOCALISATION_DICE.to_dict()


def filter_changes(model_name: str, initial: Path | None, weights: Path
                   ) -> dict[str, Any] | None:
    """Ravishankar Table 2 for the transferred layers (the fresh classifier is left out:
    it had no source weights); None after a random initialisation."""
    if initial is None or not initial.is_file():
        return None
    model = get_model(model_name)
    before, after = read_weights(initial), read_weights(weights)
    layers = [name for _, names in model.layer_groups for name in names
              if name not in model.classifiers and name in before and name in after]
    changes = changed_filters({k: before[k][0] for k in layers},
                              {k: after[k][0] for k in layers})
    return {"threshold": FILTER_CHANGE.to_dict(), "measure": "relative L2 per filter "
            "(first axis of the weight blob), source weights -> selected weights",
            "layers": {k: {"changed": c.changed, "total": c.total,
                           "median_change": float(np.median(c.relative_change))}
                       for k, c in changes.items()}}


def _xywh(box: Any) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1 - x0, y1 - y0
