"""Boit & Zeng 2019 as runs: DenseNet-121 (feature extraction / fine-tuning) on ChestX-ray14's
HDF5 sets, one sigmoid output, scored by accuracy at 0.5 (the poster's "96%"), ROC AUC with
DeLong's interval, and the class balance that accuracy has to be read against.

The runner trains on the HDF5 lists (`HDF5Data`, the images stored preprocessed) and hands
the selected weights to :meth:`ChestXray14Adapter.evaluate`, which runs the TEST-phase net
over the test list itself: the runner's own `predict` builds an LMDB test net.

Spec: `dataset.options` are `medtl.studies.boit2019.dataset.ChestXray14Config`'s keys.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medtl import config as data_config
from medtl.config import ConfigError
from medtl.datasets.manifest import sha256_file
from medtl.experiments.spec import REPO, Experiment, RunPlan
from medtl.nets.registry import ModelSpec, get_model
from medtl.protocols import Configuration
from medtl.provenance import assumed
from medtl.studies.ravishankar2016.adapter import (
    auc_interval,
    interval,
    options_key,
    phantom_options,
    read_index,
    write_rows,
)

if TYPE_CHECKING:
    from medtl.experiments.datasets import FoldData

ROLES = ("train", "val", "test")
THRESHOLD = assumed(0.5, "the poster reports accuracy without a threshold; 0.5 on the sigmoid "
                         "output, Keras' binary_accuracy default")
# DenseNet-121 halves the input five times (conv1, pool1, pool2-4) before the global pool.
MIN_INPUT = 32


def wilson(successes: int, n: int, z: float = 1.959964) -> dict[str, Any]:
    """A proportion with its 95% Wilson score interval."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return interval(p, max(0.0, centre - half), min(1.0, centre + half), "Wilson score")


class ChestXray14Adapter:
    """The NIH ChestX-ray14 release (or the kit's phantoms in its layout) -> HDF5 sets."""

    positive_classes = (1,)
    report_kind = "boit_chestxray14"   # medtl.experiments.report_other.OTHER_REPORTS

    def __init__(self, experiment: Experiment) -> None:
        from medtl.studies.boit2019.dataset import ChestXray14Config

        self.experiment = experiment
        where = f"{experiment.path}: dataset.options"
        options = dict(experiment.dataset.options)
        self.config = data_config.from_mapping(ChestXray14Config, options, where=where)
        outputs = 14 if self.config.task == "multilabel" else 1
        for cfg in experiment.configurations:
            if cfg.num_classes.value != outputs:
                raise ConfigError(f"{where}: task {self.config.task!r} gives {outputs} "
                                  f"label(s) per image; {cfg.id} has {cfg.num_classes.value} "
                                  "output(s)")
            if cfg.loss != "sigmoid":
                raise ConfigError(f"{experiment.path}: {cfg.id}: the HDF5 sets carry float "
                                  "labels for the sigmoid loss only")
        if self.config.crop_size < MIN_INPUT:
            raise ConfigError(f"{where}: crop_size {self.config.crop_size} is below "
                              f"{MIN_INPUT}, the smallest input DenseNet-121's five "
                              "stride-2 stages reduce to one pixel")
        self.data_root = experiment.results_dir / "data"
        self.dataset_dir = (self.data_root
                            / f"chestxray14_{self.config.task}_{options_key(options)}")

    def _collection(self) -> Path:
        ds = self.experiment.dataset
        if ds.source != "synthetic":
            root = REPO / Path(ds.source).expanduser()   # relative: to the repository
            if not root.is_dir():
                raise ConfigError(f"{self.experiment.path}: dataset.source: {root} is not a "
                                  "folder (the ChestX-ray14 release: Data_Entry_2017.csv, "
                                  "train_val_list.txt, test_list.txt, images_*/)")
            return root
        from medtl.studies.boit2019.phantoms import write_chestxray14_collection

        phantom = phantom_options(write_chestxray14_collection, ds.phantom,
                                  str(self.experiment.path))
        dest = self.data_root / f"phantoms_chestxray14_{options_key(phantom)}"
        if not dest.is_dir():
            write_chestxray14_collection(dest, **phantom)
        return dest

    def prepare(self, progress: bool = True) -> None:
        from medtl.studies.boit2019.dataset import build

        if not (self.dataset_dir / "manifest.json").is_file():
            build(self._collection(), self.dataset_dir, self.config, progress=progress)

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.dataset_dir / "manifest.json").read_text())

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        if fold != 1 or fraction != 1.0:
            raise ConfigError(f"{self.experiment.path}: ChestX-ray14 has one official "
                              "patient-level split: use folds: [1] and data_fractions: [1.0]")
        from medtl.experiments.datasets import FoldData

        self.prepare()
        dbs = {d["role"]: d for d in self.manifest()["databases"]}
        root = self.dataset_dir
        train, val, test = (dbs[r] for r in ROLES)
        return FoldData(train=str(root / train["path"]), val=str(root / val["path"]),
                        mean_file=None, test=str(root / test["path"]),
                        test_index=str(root / test["index_file"]), train_size=train["count"],
                        val_size=val["count"], test_size=test["count"],
                        manifest_sha256=sha256_file(root / "manifest.json"))

    # -------------------------------------------------------------- evaluation

    def test_probabilities(self, cfg: Configuration, fold: FoldData, weights: Path,
                           run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        """(sigmoid outputs N x K, labels N x K) of the test list, in list (rank) order."""
        from medtl.caffe_env import caffe, set_mode
        from medtl.nets.variants import DataSpec, val_net
        from medtl.prototxt import write_text

        model = get_model(cfg.model)
        batch = min(cfg.solver.val_batch_size.value, fold.test_size)
        net_path = write_text(run_dir / "net" / "test.prototxt", val_net(
            model.body, cfg.num_classes.value, DataSpec(fold.test, batch, backend="hdf5"),
            cfg.label or cfg.id, cfg.loss))
        c = caffe()
        set_mode(self.experiment.training.gpu)
        net = c.Net(str(net_path), c.TEST, weights=str(weights))
        probs, labels = [], []
        # HDF5Data (shuffle off) reads the list in order and wraps round after the last
        # record, so the first test_size outputs are the records in rank order.
        for _ in range(math.ceil(fold.test_size / batch)):
            net.forward()
            probs.append(np.array(net.blobs["prob"].data, copy=True).reshape(batch, -1))
            labels.append(np.array(net.blobs["label"].data, copy=True).reshape(batch, -1))
        n = fold.test_size
        return np.concatenate(probs)[:n], np.concatenate(labels)[:n]

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per test image: its label(s) from the index and the sigmoid output(s)."""
        from medtl.studies.boit2019.reader import FINDINGS

        index = read_index(Path(fold.test_index))
        if len(index) != len(probs):
            raise ValueError(f"{fold.test_index}: {len(index)} rows for {len(probs)} outputs")
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
        from medtl.studies.boit2019.reader import FINDINGS

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

    def evaluate(self, plan: RunPlan, cfg: Configuration, fold: FoldData, weights: Path,
                 run_dir: Path) -> dict[str, Any]:
        probs, labels = self.test_probabilities(cfg, fold, weights, run_dir)
        rows = self.predictions(fold, probs)
        stored = (np.array([[r["label"]] for r in rows]) if self.config.task == "binary" else
                  np.array([[v for k, v in r.items() if k.startswith("label_")] for r in rows]))
        if not np.array_equal(stored, labels.astype(int)):
            raise RuntimeError(f"{fold.test}: the labels the net read differ from "
                               f"{fold.test_index}: the HDF5 list is not in rank order")
        write_rows(run_dir / "predictions.csv", rows)
        return self.score(rows, fold)
