"""Boit & Zeng 2019 as runs: DenseNet-121 (feature extraction / fine-tuning) on ChestX-ray14's
8-bit LMDB sets, one sigmoid output, scored by accuracy at 0.5 (the poster's "96%"), ROC AUC
with DeLong's interval, and the class balance that accuracy has to be read against.

The runner trains on the LMDBs (`Data`, with the manifest's `caffe_transform`: the port's BGR
mean and scale applied by transform_param): feature extraction on the plain `train` set,
fine-tuning on the Keras-augmented `train_augmented` set
(the poster's "Feature extraction without" / "Fine-tuning with Data Augmentation"; the
dataset holds the sets its spec's configurations use). It hands the selected weights to
:meth:`ChestXray14Adapter.evaluate`: the TEST-phase net over the test list
(`medtl.infer.predict_database`), the labels it read checked against the test index.

Spec: `dataset.options` are `medtl.studies.boit2019.dataset.ChestXray14Config`'s keys;
`dataset.phantom` are :class:`ChestXray14Phantoms`'s keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medtl import io
from medtl.config import ConfigError, option
from medtl.errors import RunError
from medtl.experiments.report.context import ReportBody, ReportContext, read_csv
from medtl.experiments.study import FoldData, RunInputs, StudyAdapter
from medtl.infer import predict_database
from medtl.metrics import auc_interval, wilson
from medtl.protocols import Configuration
from medtl.provenance import assumed
from medtl.studies.boit2019.dataset import (
    BUILDER_VERSION,
    TRAIN_AUGMENTED,
    ChestXray14Config,
    build,
)
from medtl.studies.boit2019.phantoms import write_chestxray14_collection
from medtl.studies.boit2019.protocol import augmentation
from medtl.studies.boit2019.reader import FINDINGS
from medtl.studies.boit2019.report import chest_report

THRESHOLD = assumed(0.5, "the poster reports accuracy without a threshold; 0.5 on the sigmoid "
                         "output, Keras' binary_accuracy default")
# DenseNet-121 halves the input five times (conv1, pool1, pool2-4) before the global pool.
MIN_INPUT = 32


@dataclass(frozen=True)
class ChestXray14Phantoms:
    """The kit's synthetic ChestX-ray14 release
    (`medtl.studies.boit2019.phantoms.write_chestxray14_collection`)."""

    patients: int = option(20, "patients (each in train_val_list or test_list)", minimum=2)
    max_images_per_patient: int = option(3, "images per patient: 1 to this many", minimum=1)
    size: int = option(256, "PNG side (pixels; the release's: 1024)", minimum=16)
    test_fraction: float = option(0.3, "share of the patients in test_list.txt", minimum=0,
                                  exclusive_minimum=True, maximum=1)
    per_folder: int = option(40, "PNGs per images_NNN/ folder", minimum=1)
    healthy: float = option(0.5, "share of 'No Finding' images", minimum=0, maximum=1)
    revision: str = option("2017", "Data_Entry file: the 2017 release's or the 2020 "
                           "revision's", choices=("2017", "2020"))
    nested: bool = option(False, "PNGs in images_NNN/images/, as the NIH tarballs unpack")
    seed: int = option(0, "seed of the patients, findings and images", minimum=0)


class ChestXray14Adapter(StudyAdapter):
    """The NIH ChestX-ray14 release (or the kit's phantoms in its layout) -> 8-bit LMDB sets
    (HDF5 for the 14-label task)."""

    builder = "chestxray14"
    version = BUILDER_VERSION   # the builder records it in the manifest (dataset.prepared)
    paper = "boit2019"
    studies = ("chestxray14_binary",)
    options_class = ChestXray14Config
    phantom_class = ChestXray14Phantoms
    source_help = ("the ChestX-ray14 release: Data_Entry_2017.csv, (train_val_list.txt, "
                   "test_list.txt), the PNGs in any sub-folder")
    split_help = ("ChestX-ray14 has one official patient-level split (or one built from "
                  "Patient ID without the lists): use folds: [1] and "
                  "data_fractions: [1.0]")

    def dataset_options(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The training sets the spec's configurations train on (fine-tuning: augmented
        copies; feature extraction: plain images)."""
        augmented = {augmentation(c).value for c in self.experiment.configurations}
        return {"plain_train": False in augmented, "augmented_train": True in augmented,
                **raw}

    def check(self) -> None:
        where = f"{self.experiment.path}: dataset.options"
        for cfg in self.experiment.configurations:
            need = augmentation(cfg)
            key = "augmented_train" if need.value else "plain_train"
            if not getattr(self.config, key):
                raise ConfigError(f"{where}.{key}: false, but {cfg.id} trains on "
                                  f"{'augmented' if need.value else 'plain'} images "
                                  f"({need.describe()})")
        outputs = 14 if self.config.task == "multilabel" else 1
        for cfg in self.experiment.configurations:
            if cfg.num_classes.value != outputs:
                raise ConfigError(f"{where}: task {self.config.task!r} gives {outputs} "
                                  f"label(s) per image; {cfg.id} has {cfg.num_classes.value} "
                                  "output(s)")
            if cfg.loss != "sigmoid":
                raise ConfigError(f"{self.experiment.path}: {cfg.id}: the ChestX-ray14 sets "
                                  "carry labels for the sigmoid loss only")
        if self.config.crop_size < MIN_INPUT:
            raise ConfigError(f"{where}: crop_size {self.config.crop_size} is below "
                              f"{MIN_INPUT}, the smallest input DenseNet-121's five "
                              "stride-2 stages reduce to one pixel")

    def prepared_option_fits(self, key: str, recorded: Any, wanted: Any) -> bool:
        """A prepared dataset may hold a training set the spec does not train on, and its
        PNG hashes are bookkeeping."""
        if key in ("plain_train", "augmented_train"):
            return bool(recorded) or not wanted
        return key == "hash_images" or recorded == wanted

    def write_phantoms(self, dest: Path) -> None:
        write_chestxray14_collection(dest, **self.phantom_args())

    def build(self, source: Path, dest: Path, progress: bool) -> None:
        build(source, dest, self.config, progress=progress)

    def fold_data_for(self, cfg: Configuration, fold: int, fraction: float, seed: int
                      ) -> FoldData:
        """The one split, training on the set `cfg` uses: `train_augmented` for
        fine-tuning, `train` for feature extraction."""
        self.prepare()
        manifest = self.manifest()
        dbs = {d["role"]: d for d in manifest["databases"]}
        train = TRAIN_AUGMENTED if augmentation(cfg).value else "train"
        fold = self.fold_from(dbs[train], dbs["val"], dbs["test"])
        transform = manifest.get("notes", {}).get("caffe_transform")
        if not transform:
            return fold
        return replace(fold, mean_value=tuple(transform["mean_value"]),
                       scale=float(transform["scale"]))

    # -------------------------------------------------------------- evaluation

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per test image: its label(s) from the index and the sigmoid output(s)."""
        index = read_csv(Path(fold.test_index))
        if len(index) != len(probs):
            raise RunError(f"{fold.test_index}: {len(index)} rows for {len(probs)} outputs")
        rows = []
        for row, p in zip(index, probs, strict=True):
            out = {"rank": int(row["rank"]), "image": row["image"],
                   "patient_id": row["patient_id"], "findings": row["findings"]}
            if self.config.task == "binary":
                out |= {"label": int(float(row["label"])), "score": float(p[0])}
            else:
                found = set(row["findings"].split("|"))
                out |= {f"label_{f}": int(f in found) for f in FINDINGS}
                out |= {f"score_{f}": float(v) for f, v in zip(FINDINGS, p, strict=True)}
            rows.append(out)
        return rows

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        balance = self.manifest()["counts"]
        if self.config.task == "multilabel":
            return {"per_finding_roc_auc": {
                f: auc_interval(np.array([r[f"label_{f}"] for r in rows]),
                                np.array([r[f"score_{f}"] for r in rows]))
                for f in FINDINGS}, "class_balance": balance, "test_images": len(rows)}
        labels = np.array([r["label"] for r in rows])
        scores = np.array([r["score"] for r in rows])
        predicted = (scores >= THRESHOLD.value).astype(int)
        positives = int(labels.sum())
        return {
            "accuracy": wilson(int((predicted == labels).sum()), len(labels)),
            "threshold": THRESHOLD.to_dict(),
            "roc_auc": auc_interval(labels, scores),
            "sensitivity": (float(predicted[labels == 1].mean()) if positives else None),
            "specificity": (float(1 - predicted[labels == 0].mean())
                            if positives < len(labels) else None),
            "majority_class_accuracy": max(positives, len(labels) - positives) / len(labels),
            "test_images": len(labels), "test_positives": positives,
            "class_balance": balance,
        }

    def evaluate(self, run: RunInputs) -> dict[str, Any]:
        """The base's evaluation, with the labels the net read checked against the index."""
        probs, labels = predict_database(run.config, run.fold, run.weights,
                                         run.run_dir / "net" / "test.prototxt", gpu=run.gpu)
        rows = self.predictions(run.fold, probs)
        stored = (np.array([[r["label"]] for r in rows]) if self.config.task == "binary" else
                  np.array([[v for k, v in r.items() if k.startswith("label_")] for r in rows]))
        if not np.array_equal(stored, labels.astype(int)):
            raise RunError(f"{run.fold.test}: the labels the net read differ from "
                           f"{run.fold.test_index}: the test set is not in rank order")
        io.write_csv(run.run_dir / "predictions.csv", rows)
        return self.score(rows, run.fold)

    def report(self, ctx: ReportContext) -> ReportBody:
        if self.config.task != "binary":
            raise ConfigError(f"{self.experiment.path}: dataset.options.task: the report covers "
                              "the binary task (the poster's); the multi-label runs' "
                              "metrics.json hold per-finding AUCs")
        return chest_report(ctx)
