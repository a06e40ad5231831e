"""Shin et al. 2016 ILD studies (slice or patch level, six classes) for `medtl run`.

`medtl.studies.shin2016.ild.dataset` writes a training and a test database per fold. A run also
needs a validation set (Shin keeps the snapshot with the lowest validation loss, Sec. IV-C), so
the adapter deals the outer folds itself (as `medtl data ild` would: CV5 by patients, LOO,
Slice-Random), holds out part of each fold's training units for validation (patients; slices
under Slice-Random), and makes each fold from two builds of `ild_dataset` on filtered views of
the database (`medtl.studies.shin2016.ild.split`), each with a two-fold folds.csv:

    train build: training + validation units, folds {validation: 1, training: 2}
                 -> fold1/train_<s>_lmdb  the training set (augmented, prior) + its mean
    eval build:  validation + test units, folds {test: 1, validation: 2}
                 -> fold1/train_<s>_lmdb  the validation set, prepared as training data
                    (augmented; class-balanced under the equal prior)
                 -> fold1/test_<s>_lmdb   the test set + its index (one record per patch or
                    per slice label, unaugmented)

Layout under results/<paper>/<spec>/data/ild_<level>_<split>_<key>/: folds.csv and
split.json (outer folds, validation units, options with provenance); fold<f>/ with the two
filtered sources, their folds CSVs, the builds train_<s>/ and eval_<s>/ per model input size
s, and inputs_<s>.json (what runs read; its hash is the run's dataset hash).
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from medtl import config as data_config
from medtl import io
from medtl.config import ConfigError, option
from medtl.datasets.folds import FoldError, write_folds
from medtl.datasets.formats.dicom import DicomError
from medtl.datasets.manifest import sha256_file
from medtl.experiments.datasets_common import FoldData, options_key, source_root
from medtl.experiments.spec import REPO, Experiment
from medtl.nets.registry import ModelSpec, get_model
from medtl.provenance import assumed
from medtl.studies.shin2016.ild import reader as ild_io
from medtl.studies.shin2016.ild import split as ild_split
from medtl.studies.shin2016.ild.dataset import IldConfig
from medtl.studies.shin2016.ild.scores import score_classification

SIZE_KEY = {"slice": "slice_size", "patch": "patch_output_size"}
SPLIT_FILE = "split.json"
RUNNER_NEEDS = {  # checked in this order: multi_hot needs backend hdf5
    "multi_label": ("replicate", "runs train a softmax over one label per record; multi_hot "
                                 "needs a sigmoid loss on HDF5, which the runner does not build"),
    "backend": ("lmdb", "runs read LMDB databases with a mean image (medtl.experiments.runner); "
                        "hdf5 is for `medtl data ild`"),
}


@dataclasses.dataclass(frozen=True)
class IldStudyOptions:
    """The adapter's own options, beside those of `medtl.studies.shin2016.ild.dataset.IldConfig`."""

    val_fraction: float = option(
        0.2, "fraction of each fold's training units (patients; slices under slice_random) "
        "held out as its validation set",
        assumed(0.2, "Shin keeps the snapshot with the lowest validation loss (Sec. IV-C) but "
                "does not say which data validate; a fifth of the training patients, as the "
                "lymph-node study"))

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


VALIDATION_RULE = assumed(
    "held-out training units, prepared as training data",
    "Shin names no validation set; a seeded val_fraction of each fold's training units "
    "(patient-disjoint from training and test except under Slice-Random, whose units are "
    "slices), redrawn until both sides hold every class, augmented and balanced like the "
    "training set: Sec. IV-D compares classifiers 'on the balanced validation sets'")
OUTER_SPLIT = assumed(
    "CV5: patients in a seeded order, each dealt to the fold with the fewest annotated slices",
    "Shin gives five folds of disjoint patients (Sec. II) but no dealing rule; slices are what "
    "a patient brings to both levels (`medtl data ild` weights patch-level folds by patches)")
POSITIVE = assumed((1, 2, 3, 4, 5), "the driver's validation AUC (logged, not used to select) "
                                    "scores the five diseased classes against healthy")


def _short_names(classes: tuple[str, ...]) -> list[str]:
    short = dict(zip(ild_io.SIX_CLASSES, ild_io.SHORT_NAMES, strict=True))
    return [short.get(c, c) for c in classes]


def _write_json(path: Path, data: Any) -> None:
    io.write_json(path, data, indent=1)


class ShinIldAdapter:
    """The ILD database (or the kit's phantoms in its format) -> per-fold LMDBs for runs."""

    positive_classes = POSITIVE.value
    report_kind = "classification"

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        ds = experiment.dataset
        where = f"{experiment.path}: dataset.options"
        options = dict(ds.options)
        own = {f.name for f in dataclasses.fields(IldStudyOptions)}
        known = own | {f.name for f in dataclasses.fields(IldConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: "
                              f"{', '.join(sorted(known))})")
        if "only_folds" in options:
            raise ConfigError(f"{where}: only_folds: runs build the folds the spec's `folds` "
                              "lists; remove it")
        self.options = data_config.from_mapping(
            IldStudyOptions, {k: v for k, v in options.items() if k in own}, where=where)
        ild_options = {k: v for k, v in options.items() if k not in own}
        self.config = data_config.from_mapping(IldConfig, ild_options, where=where)
        for key, (needed, why) in RUNNER_NEEDS.items():
            if getattr(self.config, key) != needed:
                raise ConfigError(f"{where}: {key}: {getattr(self.config, key)!r} is not "
                                  f"supported by runs ({why}); use {needed!r}")
        self.level = self.config.level
        size_key = SIZE_KEY[self.level]
        self.sizes = sorted({get_model(c.model).image_size for c in experiment.configurations})
        if size_key in options and self.sizes != [getattr(self.config, size_key)]:
            raise ConfigError(f"{where}: {size_key}: {options[size_key]} but the spec's models "
                              f"read {self.sizes}; leave it out (each model gets its size)")
        self.class_names = _short_names(self.config.classes)
        for cfg in experiment.configurations:
            if cfg.num_classes.value != len(self.class_names):
                raise ConfigError(f"{where}: classes: {len(self.class_names)} classes but "
                                  f"{cfg.id} has {cfg.num_classes.value} outputs")
        self.data_root = experiment.results_dir / "data"
        key = options_key({"options": options, "source": ds.source,
                           "phantom": ds.phantom if ds.source == "synthetic" else {}})
        self.dataset_dir = (self.data_root
                            / f"ild_{self.level}_{self.config.split}_{key}")
        self._patients: list[ild_io.IldPatient] | None = None

    # ------------------------------------------------------------------ the database

    def _collection(self) -> Path:
        ds = self.experiment.dataset
        if ds.source != "synthetic":
            return source_root(self.experiment, "the ILD database root: one folder per patient")
        from medtl.studies.shin2016.ild.phantoms import write_collection

        phantom = dict(ds.phantom)
        accepted = set(inspect.signature(write_collection).parameters) - {"dest", "progress"}
        unknown = sorted(set(phantom) - accepted)
        if unknown:
            raise ConfigError(f"{self.experiment.path}: dataset.phantom: unknown key "
                              f"{unknown[0]!r} (known keys: {', '.join(sorted(accepted))})")
        dest = self.data_root / f"ild_phantoms_{options_key(phantom)}"
        if not dest.is_dir():
            write_collection(dest, **phantom)
        return dest

    def _scan(self) -> list[ild_io.IldPatient]:
        if self._patients is None:
            self._patients = ild_io.scan(self._collection())
        return self._patients

    def _units(self) -> tuple[ild_split.Units, dict[str, float]]:
        labels = ild_split.slice_labels(self._scan(), self.config.classes,
                                        min_points=3 if self.level == "patch" else 1)
        if not labels:
            raise ild_io.IldDataError(f"{self._collection()}: no ROI of the classes "
                                      f"{', '.join(self.config.classes)}")
        units = ild_split.units_of(labels, self.config.split != "slice_random")
        return units, {pid: float(len(s)) for pid, s in labels.items()}

    # ------------------------------------------------------------------ the split

    def split(self) -> dict[str, Any]:
        """Outer folds and validation units of every fold (drawn once, then read)."""
        path = self.dataset_dir / SPLIT_FILE
        if path.is_file():
            return json.loads(path.read_text())
        cfg = self.config
        units, weights = self._units()
        where = f"{self.experiment.path}: dataset"
        try:
            if cfg.folds_csv is not None:
                folds = ild_split.read_outer_folds(REPO / cfg.folds_csv, units)
            else:
                folds = ild_split.outer_folds(units, cfg.split, cfg.folds, cfg.seed, weights)
        except FoldError as exc:
            raise ConfigError(f"{where}: the {cfg.split} split cannot be drawn: {exc}") from exc
        per_fold = {}
        for fold in range(1, folds.k + 1):
            test = sorted(u for u in folds.units(fold) if u in units.labels)
            rest = sorted(u for u in units.labels if folds.fold_of.get(u) != fold)
            try:
                val = ild_split.hold_out_validation(
                    rest, units.labels, len(cfg.classes), self.options.val_fraction,
                    [cfg.seed, 71, fold])
            except FoldError as exc:
                raise ConfigError(f"{where}: fold {fold}: no validation set: {exc}") from exc
            per_fold[str(fold)] = {"test": test, "validation": val,
                                   "training": sorted(set(rest) - set(val))}
        self.dataset_dir.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(self.dataset_dir / "folds.csv") as tmp:
            write_folds(tmp, folds)
        record = {
            "level": self.level, "split": cfg.split, "k": folds.k,
            "unit": "patient" if units.patient_disjoint else "slice (<patient>:<slice>)",
            "classes": self.class_names, "patient_of": units.patient_of, "folds": per_fold,
            "options": data_config.protocol_values(self.options),
            "validation_rule": VALIDATION_RULE.to_dict(),
            "source": str(self._collection()),
        }
        _write_json(path, record)
        return record

    # ------------------------------------------------------------------ per fold

    def _fold_dir(self, fold: int) -> Path:
        return self.dataset_dir / f"fold{fold}"

    def _inputs_file(self, fold: int, size: int) -> Path:
        return self._fold_dir(fold) / f"inputs_{size}.json"

    def _build_fold(self, fold: int, size: int, progress: bool) -> None:
        from medtl.studies.shin2016.ild import dataset as ild_dataset

        split = self.split()
        if str(fold) not in split["folds"]:
            raise ConfigError(f"{self.experiment.path}: folds: fold {fold}, but the "
                              f"{split['split']} split has {split['k']} folds")
        units = ild_split.Units({}, split["patient_of"], split["unit"] == "patient")
        parts = split["folds"][str(fold)]
        test, val, training = parts["test"], parts["validation"], parts["training"]
        fdir = self._fold_dir(fold)
        fdir.mkdir(parents=True, exist_ok=True)
        builds = {"train": (training + val, [(val, 1), (training, 2)]),
                  "eval": (val + test, [(test, 1), (val, 2)])}
        for name, (members, groups) in builds.items():
            source = fdir / f"{name}_source"
            if not source.is_dir():
                ild_split.write_filtered_source(self._scan(), units.slices_of(set(members)),
                                                source)
            folds_csv = ild_split.write_build_folds(fdir / f"{name}_folds.csv", groups, units)
            dest = fdir / f"{name}_{size}"
            if (dest / "manifest.json").is_file():
                continue
            cfg = dataclasses.replace(self.config, folds_csv=str(folds_csv), only_folds=(1,),
                                      **{SIZE_KEY[self.level]: size})
            try:
                ild_dataset.build(source, dest, cfg, progress=progress)
            except ild_io.IldDataError as exc:
                role = "training" if name == "train" else "validation"
                raise ild_io.IldDataError(f"fold {fold}, {name} build ({role} units on the "
                                          f"training side): {exc}") from exc
        train_m = fdir / f"train_{size}" / "manifest.json"
        eval_m = fdir / f"eval_{size}" / "manifest.json"
        _write_json(self._inputs_file(fold, size), {
            "fold": fold, "size": size,
            "split_sha256": sha256_file(self.dataset_dir / SPLIT_FILE),
            "train_manifest_sha256": sha256_file(train_m),
            "eval_manifest_sha256": sha256_file(eval_m),
            "train": f"fold{fold}/train_{size}: fold1/train (training units)",
            "val": f"fold{fold}/eval_{size}: fold1/train (validation units)",
            "test": f"fold{fold}/eval_{size}: fold1/test (test units)",
            "units": {"training": len(training), "validation": len(val), "test": len(test)},
        })

    def _ensure_fold(self, fold: int, size: int, progress: bool) -> None:
        if self._inputs_file(fold, size).is_file():
            return
        try:
            self._build_fold(fold, size, progress)
        except (ild_io.IldDataError, DicomError) as exc:  # unusable source data
            raise ConfigError(f"{self.experiment.path}: dataset.source: {exc}") from exc

    def prepare(self, progress: bool = True) -> None:
        """Build every fold the spec lists, for every input size its models read."""
        for fold in self.experiment.spec.folds:
            for size in self.sizes:
                self._ensure_fold(fold, size, progress)

    @staticmethod
    def _database(build: Path, role: str) -> dict[str, Any]:
        manifest = json.loads((build / "manifest.json").read_text())
        return next(d for d in manifest["databases"] if d["role"] == role and d["fold"] == 1)

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        if fraction != 1.0:
            raise ConfigError(f"{self.experiment.path}: data_fractions: the ILD studies train "
                              "on whole folds (use 1.0)")
        size = model.image_size
        self._ensure_fold(fold, size, progress=True)
        fdir = self._fold_dir(fold)
        train_build, eval_build = fdir / f"train_{size}", fdir / f"eval_{size}"
        train = self._database(train_build, "train")
        val = self._database(eval_build, "train")
        test = self._database(eval_build, "test")
        return FoldData(train=str(train_build / train["path"]),
                        val=str(eval_build / val["path"]),
                        mean_file=str(train_build / train["mean_file"]),
                        test=str(eval_build / test["path"]),
                        test_index=str(eval_build / test["index_file"]),
                        train_size=train["count"], val_size=val["count"],
                        test_size=test["count"],
                        manifest_sha256=sha256_file(self._inputs_file(fold, size)))

    def dataset_manifests(self) -> list[Path]:
        """The manifests of the builds made so far (their protocol values feed the report)."""
        return sorted(self.dataset_dir.glob("fold*/train_*/manifest.json"))

    # ------------------------------------------------------------------ outputs

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per test record: its patient, slice (patch: ROI id and position), truth, the
        predicted class and the six class probabilities."""
        with open(fold.test_index, newline="") as f:
            index = list(csv.DictReader(f))
        k = len(self.class_names)
        if len(index) != len(probs):
            raise ValueError(f"{fold.test_index}: {len(index)} rows for {len(probs)} outputs")
        if probs.ndim != 2 or probs.shape[1] != k:
            raise ValueError(f"expected ({len(index)}, {k}) class probabilities, got "
                             f"{probs.shape}")
        full = list(self.config.classes)
        rows = []
        for r, p in zip(index, probs, strict=True):
            label = int(r["label"])
            predicted = int(np.argmax(p))
            if self.level == "slice":
                names = [self.class_names[full.index(n)] for n in r["labels"].split("|")]
                sample = f"{r['patient_id']}/{r['slice']}/{self.class_names[label]}"
                roi, row, col = "", "", ""
            else:
                names = [self.class_names[label]]
                roi, row, col = r["roi"], r["row"], r["col"]
                sample = f"{roi}/{row}/{col}"
            rows.append({"sample_id": sample, "patient_id": r["patient_id"],
                         "slice": int(r["slice"]), "roi": roi, "row": row, "col": col,
                         "labels": "|".join(names), "label": label,
                         "truth": self.class_names[label], "predicted": predicted,
                         "predicted_name": self.class_names[predicted],
                         **{f"p_{n}": float(v) for n, v in zip(self.class_names, p,
                                                               strict=True)}})
        return rows

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_classification(rows, self.class_names, self.level)
