"""Ravishankar et al. 2016 as runs: CaffeNet FA / PA / NA, then fc7 and Haar features into a
gradient boosting machine, scored by detection accuracy, localisation failures and the number
of filters fine-tuning changed.

The runner trains each configuration (FA and PA fine-tune; NA freezes every layer, so its
epochs change nothing) and hands the selected weights to :meth:`KidneyAdapter.evaluate`:

1. fc7 features (`medtl.datasets.features.extract`) of the train / val / test patches with the
   selected weights; the dataset's Haar features of the same patches (same rank order).
2. A seeded GradientBoostingClassifier per feature set: fc7, Haar, fc7 + Haar (concatenated),
   fitted on the training patches; accuracy and ROC AUC on the test patches.
3. Localisation: every test image is covered by sliding boxes of the training kidneys' mean
   size (at a few scales); the highest-scoring box is the detection, a failure when its Dice
   with the ground-truth kidney box is below 0.80 (`metrics.localisation_failures`).
4. Table 2: filters per layer whose weights moved by more than 40% relative L2 from the
   source (ImageNet, or stand-in) weights (`metrics.changed_filters`).

Outputs in the run directory: predictions.csv (per test patch, one score per feature set),
localisation.csv (per test image and feature set), features/<blob>_<role>.h5.

Spec: `dataset.options` are `medtl.studies.ravishankar2016.dataset.KidneyConfig`'s keys, plus an
`evaluation` mapping of :class:`KidneyEvaluation`'s keys (not part of the dataset's cache key).
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from medtl import config as data_config
from medtl.config import ConfigError, option
from medtl.datasets.manifest import sha256_file
from medtl.experiments.spec import REPO, Experiment, RunPlan
from medtl.nets.registry import ModelSpec, get_model
from medtl.protocols import Configuration
from medtl.provenance import assumed, paper

if TYPE_CHECKING:
    from medtl.experiments.datasets import FoldData

SEC2 = "Ravishankar 2016 Sec. 2 (via the review)"
ROLES = ("train", "val", "test")
MANIFEST_CSV = "candidates.csv"   # the candidate manifest's name inside a source folder
DETECTION_RULE = ("one detection per test image: the sliding box with the highest GBM "
                  "probability; its Dice is the best over the image's ground-truth kidney "
                  "boxes (assumed: the review does not say how an image with two kidneys "
                  "is scored)")


@dataclass(frozen=True)
class KidneyEvaluation:
    """How the selected network is turned into Table 1 and Table 2 numbers."""

    feature_blob: str = option("fc7", "CNN blob whose activations feed the GBM",
                               paper("fc7", f"{SEC2}: 'only use the feature after fc7', "
                                            "4096 dimensions"))
    gbm_estimators: int = option(100, "boosting stages of the GBM", assumed(
        100, "not given; scikit-learn's default n_estimators"))
    gbm_learning_rate: float = option(0.1, "GBM shrinkage", assumed(
        0.1, "not given; scikit-learn's default learning_rate"))
    gbm_max_depth: int = option(3, "depth of each GBM tree", assumed(
        3, "not given; scikit-learn's default max_depth"))
    gbm_subsample: float = option(1.0, "share of the training patches each tree sees",
                                  assumed(1.0, "not given; scikit-learn's default"))
    window_scales: list[float] = option(
        [0.8, 0.9, 1.0, 1.1, 1.25], "sliding-box sizes as factors of the training kidneys' "
        "mean box", assumed([0.8, 0.9, 1.0, 1.1, 1.25], "not given; sizes around a typical "
                            "kidney, so the best box can reach Dice 0.8 on kidneys of other "
                            "sizes"))
    window_stride: float = option(0.1, "sliding-box step as a share of the box side",
                                  assumed(0.1, "not given; the training positives' jitter "
                                               "(KidneyConfig.jitter)"))
    batch: int = option(50, "patches per forward pass (speed only)")

    def __post_init__(self) -> None:
        if self.gbm_estimators < 1 or self.gbm_max_depth < 1 or self.batch < 1:
            raise ValueError("gbm_estimators, gbm_max_depth and batch must be at least 1")
        if not 0 < self.gbm_subsample <= 1 or self.gbm_learning_rate <= 0:
            raise ValueError("gbm_subsample must lie in (0, 1], gbm_learning_rate above 0")
        if not self.window_scales or min(self.window_scales) <= 0:
            raise ValueError("window_scales must be positive factors")
        if not 0 < self.window_stride <= 1:
            raise ValueError("window_stride must lie in (0, 1]")


def options_key(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()
                          ).hexdigest()[:10]


def phantom_options(function, phantom: dict[str, Any], where: str) -> dict[str, Any]:
    """The spec's phantom options, checked against the phantom writer's keyword arguments
    (a typo would otherwise surface as a TypeError from deep inside)."""
    known = [p for p in inspect.signature(function).parameters if p != "dest"]
    unknown = sorted(set(phantom) - set(known))
    if unknown:
        raise ConfigError(f"{where}: dataset.phantom: unknown key {unknown[0]!r} (known keys: "
                          f"{', '.join(known)})")
    return dict(phantom)


def read_index(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows to a CSV, atomically (header from the first row)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def interval(estimate: float, low: float, high: float, method: str) -> dict[str, Any]:
    return {"estimate": float(estimate), "low": float(low), "high": float(high),
            "method": method}


def auc_interval(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any] | None:
    """ROC AUC with DeLong's 95% interval; None without two samples of each class."""
    from medtl.metrics import delong_auc

    labels = np.asarray(labels, int)
    if not 1 < labels.sum() < len(labels) - 1:
        return None
    roc = delong_auc(labels, np.asarray(scores, float))
    return interval(roc.auc, roc.interval.low, roc.interval.high, "DeLong")


# ------------------------------------------------------------------ CNN features of patches

class PatchFeatures:
    """A deploy net's activations of in-memory patches, preprocessed as Caffe's TEST phase
    and `medtl.datasets.features.extract` do: the mean image subtracted, the centre crop taken."""

    def __init__(self, deploy: Path, weights: Path, mean_file: Path, blob: str,
                 gpu: int | None = None) -> None:
        from medtl.caffe_env import caffe, set_mode
        from medtl.datasets.mean import read_binaryproto

        c = caffe()
        set_mode(gpu)
        self.net = c.Net(str(deploy), c.TEST, weights=str(weights))
        if blob not in self.net.blobs:
            raise ConfigError(f"{deploy}: no blob {blob!r} (evaluation.feature_blob)")
        self.blob = blob
        self.input = self.net.inputs[0]
        _, self.channels, self.height, self.width = self.net.blobs[self.input].data.shape
        self.mean = read_binaryproto(Path(mean_file)).astype(np.float32)
        self.end = [name for name, tops in self.net.top_names.items() if blob in tops][-1]

    def __call__(self, patches: np.ndarray, batch: int = 50) -> np.ndarray:
        """n x D float32 activations of n x C x H x W uint8 patches."""
        if patches.shape[1:] != self.mean.shape:
            raise ValueError(f"patches of shape {patches.shape[1:]}, the mean image is "
                             f"{self.mean.shape}")
        top = (patches.shape[2] - self.height) // 2
        left = (patches.shape[3] - self.width) // 2
        out = []
        for start in range(0, len(patches), batch):
            x = patches[start:start + batch].astype(np.float32) - self.mean
            x = x[:, :, top:top + self.height, left:left + self.width]
            self.net.blobs[self.input].reshape(*x.shape)
            self.net.blobs[self.input].data[...] = x
            self.net.forward(end=self.end)
            out.append(np.array(self.net.blobs[self.blob].data, copy=True).reshape(len(x), -1))
        return np.concatenate(out)


# ------------------------------------------------------------------ the adapter

class KidneyAdapter:
    """Kidney ultrasound candidate manifest (or the kit's phantoms) -> patch LMDBs + Haar."""

    positive_classes = (1,)
    report_kind = "ravishankar_kidney"   # medtl.experiments.report_other.OTHER_REPORTS

    def __init__(self, experiment: Experiment) -> None:
        from medtl.studies.ravishankar2016.dataset import KidneyConfig

        self.experiment = experiment
        where = f"{experiment.path}: dataset.options"
        options = dict(experiment.dataset.options)
        evaluation = options.pop("evaluation", {})
        self.config = data_config.from_mapping(KidneyConfig, options, where=where)
        self.evaluation = data_config.from_mapping(KidneyEvaluation, evaluation,
                                                   where=f"{where}.evaluation")
        for cfg in experiment.configurations:
            crop = get_model(cfg.model).crop_size
            if self.config.patch_size < crop:
                raise ConfigError(f"{where}: patch_size {self.config.patch_size} is smaller "
                                  f"than {cfg.model}'s input {crop}")
        self.data_root = experiment.results_dir / "data"
        self.dataset_dir = self.data_root / f"kidney_{options_key(options)}"

    def _manifest_csv(self) -> Path:
        ds = self.experiment.dataset
        if ds.source != "synthetic":
            source = REPO / Path(ds.source).expanduser()   # relative: to the repository
            path = source / MANIFEST_CSV if source.is_dir() else source
            if not path.is_file():
                raise ConfigError(f"{self.experiment.path}: dataset.source: {path} does not "
                                  "exist (the kidney candidate manifest, or a folder holding "
                                  f"{MANIFEST_CSV}; see data_prep/CANDIDATE_MANIFEST.md)")
            return path
        from medtl.studies.ravishankar2016.phantoms import MANIFEST, write_kidney_collection

        phantom = phantom_options(write_kidney_collection, ds.phantom, str(self.experiment.path))
        dest = self.data_root / f"phantoms_kidney_{options_key(phantom)}"
        if not (dest / MANIFEST).is_file():
            write_kidney_collection(dest, **phantom)
        return dest / MANIFEST

    def prepare(self, progress: bool = True) -> None:
        from medtl.studies.ravishankar2016.dataset import build

        if not (self.dataset_dir / "manifest.json").is_file():
            build(self._manifest_csv(), self.dataset_dir, self.config, progress=progress)

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.dataset_dir / "manifest.json").read_text())

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        if fold != 1 or fraction != 1.0:
            raise ConfigError(f"{self.experiment.path}: the kidney study has one subject-level "
                              "split: use folds: [1] and data_fractions: [1.0]")
        from medtl.experiments.datasets import FoldData

        self.prepare()
        dbs = {d["role"]: d for d in self.manifest()["databases"]}
        root = self.dataset_dir
        train, val, test = (dbs[r] for r in ROLES)
        return FoldData(train=str(root / train["path"]), val=str(root / val["path"]),
                        mean_file=str(root / train["mean_file"]), test=str(root / test["path"]),
                        test_index=str(root / test["index_file"]), train_size=train["count"],
                        val_size=val["count"], test_size=test["count"],
                        manifest_sha256=sha256_file(root / "manifest.json"))

    # -------------------------------------------------------------- evaluation

    def evaluate(self, plan: RunPlan, cfg: Configuration, fold: FoldData, weights: Path,
                 run_dir: Path) -> dict[str, Any]:
        ev = self.evaluation
        gpu = self.experiment.training.gpu
        deploy = run_dir / "net" / "deploy.prototxt"
        digest = sha256_file(weights)
        cnn = {r: self._cnn_features(deploy, weights, digest, Path(getattr(fold, r)), fold,
                                     run_dir / "features" / f"{ev.feature_blob}_{r}.h5", gpu)
               for r in ROLES}
        haar = self._haar_features()
        labels = {}
        for r in ROLES:
            labels[r] = cnn[r][1]
            if haar and not np.array_equal(haar[r][1], labels[r]):
                raise RuntimeError(f"{self.dataset_dir}/haar/{r}.h5: labels differ from the "
                                   f"{r} LMDB's (the Haar file is not in LMDB key order)")
        sets = self._feature_sets({r: cnn[r][0] for r in ROLES},
                                  {r: haar[r][0] for r in ROLES} if haar else None)
        classifiers, scores, per_set = {}, {}, {}
        for name, x in sets.items():
            clf = self._gbm(plan.seed).fit(x["train"], labels["train"])
            classifiers[name] = clf
            scores[name] = clf.predict_proba(x["test"])[:, 1]
            per_set[name] = {
                "test_accuracy": float((clf.predict(x["test"]) == labels["test"]).mean()),
                "val_accuracy": float((clf.predict(x["val"]) == labels["val"]).mean()),
                "test_roc_auc": auc_interval(labels["test"], scores[name]),
            }
        index = read_index(Path(fold.test_index))
        if len(index) != len(labels["test"]):
            raise RuntimeError(f"{fold.test_index}: {len(index)} rows for "
                               f"{len(labels['test'])} test patches")
        write_rows(run_dir / "predictions.csv", [
            {"rank": row["rank"], "sample_id": row["candidate_id"],
             "patient_id": row["patient_id"], "image": row["image"], "label": int(y),
             **{f"score_{name}": float(scores[name][i]) for name in sets}}
            for i, (row, y) in enumerate(zip(index, labels["test"], strict=True))])

        net = PatchFeatures(deploy, weights, Path(fold.mean_file), ev.feature_blob, gpu)
        located = self._localise(net, classifiers)
        write_rows(run_dir / "localisation.csv", located)
        self._score_localisation(located, per_set)
        return {
            "feature_blob": ev.feature_blob,
            "feature_sets": per_set,
            "changed_filters": self._filter_changes(cfg, run_dir, weights),
            "evaluation": data_config.protocol_values(ev),
            "detection_rule": DETECTION_RULE,
            "test_patches": len(labels["test"]),
            "test_positives": int(labels["test"].sum()),
            "train_patches": len(labels["train"]),
            "test_images": len({r["image"] for r in located}),
        }

    def _cnn_features(self, deploy: Path, weights: Path, digest: str, source: Path,
                      fold: FoldData, out: Path, gpu: int | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of an LMDB, reusing a finished file of the same weights
        (`digest`: their sha256), as a resumed run does."""
        from medtl.datasets.features import extract

        if out.is_file():
            with h5py.File(out, "r") as f:
                same = f.attrs.get("weights_sha256") == digest
            if not same:
                out.unlink()
        if not out.is_file():
            extract(deploy, weights, source, out, blob=self.evaluation.feature_blob,
                    mean_file=Path(fold.mean_file), batch=self.evaluation.batch, gpu=gpu,
                    progress=False)
        with h5py.File(out, "r") as f:
            return f["features"][...], f["label"][...].astype(int).reshape(-1)

    def _haar_features(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        if not self.config.haar_features:
            return None
        out = {}
        for r in ROLES:
            with h5py.File(self.dataset_dir / "haar" / f"{r}.h5", "r") as f:
                out[r] = (f["features"][...], f["label"][...].astype(int))
        return out

    def _feature_sets(self, cnn: dict[str, np.ndarray], haar: dict[str, np.ndarray] | None
                      ) -> dict[str, dict[str, np.ndarray]]:
        blob = self.evaluation.feature_blob
        sets = {blob: cnn}
        if haar is not None:
            sets["haar"] = haar
            sets[f"{blob}+haar"] = {r: np.hstack([cnn[r], haar[r]]) for r in ROLES}
        return sets

    def _gbm(self, seed: int):
        from sklearn.ensemble import GradientBoostingClassifier

        ev = self.evaluation
        return GradientBoostingClassifier(
            n_estimators=ev.gbm_estimators, learning_rate=ev.gbm_learning_rate,
            max_depth=ev.gbm_max_depth, subsample=ev.gbm_subsample, random_state=seed)

    def window_sizes(self) -> list[tuple[float, float]]:
        """Sliding-box sizes: the training kidneys' mean box (the manifest boxes themselves,
        sample ids ending ':pos0') times each scale."""
        rows = [r for r in read_index(self.dataset_dir / "train_index.csv")
                if r["label"] == "1" and r["candidate_id"].endswith(":pos0")]
        if not rows:
            raise RuntimeError(f"{self.dataset_dir}/train_index.csv: no training kidney box")
        w = float(np.mean([float(r["x1"]) - float(r["x0"]) for r in rows]))
        h = float(np.mean([float(r["y1"]) - float(r["y0"]) for r in rows]))
        return [(w * s, h * s) for s in self.evaluation.window_scales]

    def _localise(self, net: PatchFeatures, classifiers: dict[str, Any]) -> list[dict[str, Any]]:
        from medtl.datasets.formats.images import image_size
        from medtl.metrics import box_dice
        from medtl.studies.ravishankar2016.dataset import render_boxes, sliding_boxes
        from medtl.studies.ravishankar2016.haar import HaarBank

        ev = self.evaluation
        bank = (HaarBank(self.config.haar_window, self.config.haar_features)
                if self.config.haar_features else None)
        kidneys: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in read_index(self.dataset_dir / "test_images.csv"):
            kidneys[row["image"]].append(row)
        sizes = self.window_sizes()
        blob = ev.feature_blob
        out = []
        for image, truth in sorted(kidneys.items()):
            width, height = image_size(Path(image))
            boxes = sliding_boxes(width, height, sizes, ev.window_stride)
            if not len(boxes):
                raise RuntimeError(f"{image}: {width} x {height} pixels, smaller than every "
                                   "sliding box (evaluation.window_scales)")
            scores = {name: np.empty(len(boxes)) for name in classifiers}
            for start in range(0, len(boxes), 4 * ev.batch):
                chunk = slice(start, start + 4 * ev.batch)
                patches = render_boxes(Path(image), boxes[chunk], self.config.patch_size)
                feats = {blob: net(patches, ev.batch)}
                if bank is not None:
                    feats["haar"] = bank.compute(patches)
                    feats[f"{blob}+haar"] = np.hstack([feats[blob], feats["haar"]])
                for name, clf in classifiers.items():
                    scores[name][chunk] = clf.predict_proba(feats[name])[:, 1]
            gt = [tuple(float(t[k]) for k in ("x0", "y0", "x1", "y1")) for t in truth]
            for name, s in scores.items():
                best = boxes[int(np.argmax(s))]
                d = max(box_dice(_xywh(best), _xywh(g)) for g in gt)
                out.append({"image": image, "patient_id": truth[0]["patient_id"],
                            "feature_set": name, "boxes_scored": len(boxes),
                            "x0": round(float(best[0]), 2), "y0": round(float(best[1]), 2),
                            "x1": round(float(best[2]), 2), "y1": round(float(best[3]), 2),
                            "score": float(s.max()), "dice": round(d, 4)})
        return out

    @staticmethod
    def _score_localisation(located: list[dict[str, Any]], per_set: dict[str, dict]) -> None:
        from medtl.metrics import LOCALISATION_DICE, localisation_failures

        for name, entry in per_set.items():
            dice = np.array([r["dice"] for r in located if r["feature_set"] == name])
            entry["localisation_failures"] = localisation_failures(dice)
            entry["localisation_images"] = int(dice.size)
            entry["median_dice"] = float(np.median(dice))
            entry["dice_threshold"] = LOCALISATION_DICE.to_dict()

    @staticmethod
    def _filter_changes(cfg: Configuration, run_dir: Path, weights: Path
                        ) -> dict[str, Any] | None:
        """Ravishankar Table 2 for the transferred layers (the fresh classifier is left out:
        it had no source weights)."""
        from medtl.metrics import FILTER_CHANGE, changed_filters
        from medtl.surgery import read_weights

        initial = run_dir / "init.caffemodel"
        if not initial.is_file():
            return None        # random initialisation: nothing was transferred
        model = get_model(cfg.model)
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


def _xywh(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1 - x0, y1 - y0
