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

Layout under <results>/datasets/shin_ild_<key>/ (the key: every option, `val_fraction`, the
source or phantom settings): folds.csv and split.json (outer folds, validation units, the
annotated slices per class of each fold's test units, options with provenance); fold<f>/
with the two filtered sources, their folds CSVs, the builds train_<s>/ and eval_<s>/ per
model input size s, and inputs_<s>.json (what runs read; its hash is the run's dataset
hash). Folds are built as the spec's `folds` ask for them.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from medtl import config as cfgmod
from medtl import io
from medtl.config import option
from medtl.datasets.folds import FoldError, Folds, read_folds, write_folds
from medtl.datasets.formats.dicom import DicomError
from medtl.errors import ConfigError, InputError, RunError
from medtl.experiments.report.context import ReportBody, ReportContext, read_csv
from medtl.experiments.study import FoldData, StudyAdapter, short_key
from medtl.nets.registry import ModelSpec
from medtl.paths import resolve, shown
from medtl.provenance import assumed, paper
from medtl.studies.shin2016.ild import reader as ild_io
from medtl.studies.shin2016.ild import split as ild_split
from medtl.studies.shin2016.ild.dataset import IldConfig, build
from medtl.studies.shin2016.ild.phantoms import IldPhantoms, write_collection
from medtl.studies.shin2016.ild.report import IldStudy, classification_report
from medtl.studies.shin2016.ild.scores import score_classification

SIZE_KEY = {"slice": "slice_size", "patch": "patch_output_size"}
SPLIT_FILE = "split.json"
RUNNER_NEEDS = {  # checked in this order: multi_hot needs backend hdf5
    "multi_label": ("replicate", "runs train a softmax over one label per record; multi_hot "
                                 "needs a sigmoid loss on HDF5, which the runner does not build"),
    "backend": ("lmdb", "runs read LMDB databases with a mean image (medtl.experiments.runner); "
                        "hdf5 is for `medtl data ild`"),
}
LOO_PATIENTS = paper(120, "Shin 2016 Sec. II: '905 image slices from 120 patients'; the "
                         "leave-one-patient-out folds before the database is there")
POSITIVE = assumed((1, 2, 3, 4, 5), "the driver's validation AUC (logged, not used to select) "
                                    "scores the five diseased classes against healthy")


@dataclasses.dataclass(frozen=True)
class IldStudyOptions:
    """The adapter's own options, flat in `dataset.options` beside those of
    `medtl.studies.shin2016.ild.dataset.IldConfig`."""

    val_fraction: float = option(
        0.2, "fraction of each fold's training units (patients; slices under slice_random) "
        "held out as its validation set",
        assumed(0.2, "Shin keeps the snapshot with the lowest validation loss (Sec. IV-C) but "
                "does not say which data validate; a fifth of the training patients, as the "
                "lymph-node study"))

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


STUDY_KEYS = frozenset(f.name for f in dataclasses.fields(IldStudyOptions))


def _short_names(classes: tuple[str, ...]) -> list[str]:
    short = dict(zip(ild_io.SIX_CLASSES, ild_io.SHORT_NAMES, strict=True))
    return [short.get(c, c) for c in classes]


def _in_build(build_name: str, record: dict[str, Any]) -> dict[str, Any]:
    """A build's manifest record with its paths relative to the fold folder."""
    return {**record, **{k: f"{build_name}/{record[k]}"
                         for k in ("path", "mean_file", "index_file") if record.get(k)}}


class ShinIldAdapter(StudyAdapter):
    """The ILD database (or the kit's phantoms in its format) -> per-fold LMDBs for runs."""

    builder = "shin_ild"
    version = 2  # 2: windows stored in Caffe order (lung in channel 2)
    paper = "shin2016"
    studies = ("ild_slice", "ild_patch")
    options_class = IldConfig
    phantom_class = IldPhantoms
    source_help = ("the ILD database root: one folder per patient with its CT-XXXX-YYYY.dcm "
                   "slices and ROI text files")
    positive_classes = POSITIVE.value
    given: frozenset[str]                # the keys dataset.options sets (`dataset_options`)
    study_options: IldStudyOptions       # the adapter's own options (`val_fraction`)

    # ------------------------------------------------------------------ options

    def dataset_options(self, raw: dict[str, Any]) -> dict[str, Any]:
        """IldConfig's options; `val_fraction` is parsed apart (`study_options`) and a
        `folds_csv` is resolved against the spec's folder."""
        where = f"{self.experiment.path}: dataset.options"
        known = STUDY_KEYS | {f.name for f in dataclasses.fields(IldConfig)}
        unknown = sorted(set(raw) - known, key=str)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: "
                              f"{', '.join(sorted(known))})")
        self.given = frozenset(raw)
        self.study_options = cfgmod.from_mapping(
            IldStudyOptions, {k: v for k, v in raw.items() if k in STUDY_KEYS}, where=where)
        options = {k: v for k, v in raw.items() if k not in STUDY_KEYS}
        if isinstance(options.get("folds_csv"), str):
            options["folds_csv"] = str(resolve(options["folds_csv"], self.experiment.folder))
        return options

    def check(self) -> None:
        where = f"{self.experiment.path}: dataset.options"
        for key, (needed, why) in RUNNER_NEEDS.items():
            if getattr(self.config, key) != needed:
                raise ConfigError(f"{where}.{key}: {getattr(self.config, key)!r} is not "
                                  f"supported by runs ({why}); use {needed!r}")
        if "only_folds" in self.given:
            raise ConfigError(f"{where}.only_folds: runs build the folds the spec's `folds` "
                              "lists; remove it")
        size_key = SIZE_KEY[self.level]
        if size_key in self.given and self.sizes != [getattr(self.config, size_key)]:
            raise ConfigError(f"{where}.{size_key}: {getattr(self.config, size_key)} but the "
                              f"spec's models read {self.sizes}; leave it out (each model "
                              "gets its size)")
        for cfg in self.experiment.configurations:
            if cfg.num_classes.value != len(self.class_names):
                raise ConfigError(f"{where}.classes: {len(self.class_names)} classes but "
                                  f"{cfg.id} has {cfg.num_classes.value} outputs")

    @property
    def level(self) -> str:
        return self.config.level

    @property
    def class_names(self) -> list[str]:
        return _short_names(self.config.classes)

    @cached_property
    def sizes(self) -> list[int]:
        return self.model_sizes()

    @property
    def prior(self) -> str | None:
        """The prior when the spec sets it (a study of the prior: Table VIII), else None."""
        return self.config.prior if "prior" in self.given else None

    def fold_count(self) -> int | None:
        """The folds of the outer split: the given folds.csv's, `folds` (CV5, Slice-Random),
        or one per patient (LOO: the phantoms' patients, or the database's patients with an
        ROI of the classes; Shin's 120 until the database is there)."""
        if self.config.folds_csv is not None:
            try:
                return read_folds(Path(self.config.folds_csv)).k
            except FoldError as exc:
                raise ConfigError(f"{self.experiment.path}: dataset.options.folds_csv: "
                                  f"{exc}") from None
        if self.config.split != "loo":
            return self.config.folds
        if self.synthetic:
            return self.phantom.patients
        try:
            count = ild_split.loo_patients(self.source_path, self.config.classes,
                                           min_points=self.min_points)
        except ild_io.IldDataError as exc:
            raise InputError(f"{self.experiment.path}: dataset.source: {exc}") from exc
        if count is None:
            return LOO_PATIENTS.value
        return count or None  # no ROI of the classes: the build names the problem

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "val_fraction": self.study_options.val_fraction}

    def source_identity(self) -> str | None:
        """The source's identity, and that of a given folds.csv (it deals the folds)."""
        identity = super().source_identity()
        folds_csv = self.config.folds_csv
        if folds_csv is None or not Path(folds_csv).is_file():
            return identity
        return short_key({"source": identity, "folds_csv": io.sha256_file(Path(folds_csv))})

    def protocol_values(self) -> dict[str, dict[str, dict[str, Any]]]:
        out = super().protocol_values()
        out["dataset"] = {**out["dataset"], **cfgmod.protocol_values(self.study_options)}
        return out

    def write_phantoms(self, dest: Path) -> None:
        write_collection(dest, **self.phantom_args())

    # ------------------------------------------------------------------ the database

    @cached_property
    def patients(self) -> list[ild_io.IldPatient]:
        return ild_io.scan(self.source())

    @property
    def min_points(self) -> int:
        """Contour points an ROI needs to count (patches need 3 to enclose an area)."""
        return 3 if self.level == "patch" else 1

    @cached_property
    def slice_classes(self) -> dict[str, dict[int, set[int]]]:
        """Patient -> annotated slice -> class indices of its ROIs (of the classes)."""
        labels = ild_split.slice_labels(self.patients, self.config.classes,
                                        min_points=self.min_points)
        if not labels:
            raise ild_io.IldDataError(f"{self.source()}: no ROI of the classes "
                                      f"{', '.join(self.config.classes)}")
        return labels

    def _units(self) -> tuple[ild_split.Units, dict[str, float]]:
        labels = self.slice_classes
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
                folds = ild_split.read_outer_folds(Path(cfg.folds_csv), units)
            else:
                folds = ild_split.outer_folds(units, cfg.split, cfg.folds, cfg.seed, weights)
        except FoldError as exc:
            raise ConfigError(f"{where}: the {cfg.split} split cannot be drawn: {exc}") from exc
        per_fold = {str(fold): self._fold_units(folds, fold, units)
                    for fold in range(1, folds.k + 1)}
        self.dataset_dir.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(self.dataset_dir / "folds.csv") as tmp:
            write_folds(tmp, folds)
        record = {
            "level": self.level, "split": cfg.split, "k": folds.k,
            "unit": "patient" if units.patient_disjoint else "slice (<patient>:<slice>)",
            "classes": self.class_names, "patient_of": units.patient_of, "folds": per_fold,
            "slices_per_class": ild_split.slices_per_fold(self.slice_classes, units, folds,
                                                          len(cfg.classes)),
            "options": cfgmod.protocol_values(self.study_options),
            "validation_rule": ild_split.VALIDATION_RULE.to_dict(),
            "source": str(self.source()),
        }
        io.write_json(path, record, indent=1)
        return record

    def _fold_units(self, folds: Folds, fold: int, units: ild_split.Units
                    ) -> dict[str, list[str]]:
        """A fold's test units and its training units split into validation and training."""
        cfg = self.config
        test = sorted(u for u in folds.units(fold) if u in units.labels)
        rest = sorted(u for u in units.labels if folds.fold_of.get(u) != fold)
        try:
            val = ild_split.hold_out_validation(rest, units.labels, len(cfg.classes),
                                                self.study_options.val_fraction,
                                                [cfg.seed, 71, fold])
        except FoldError as exc:
            raise ConfigError(f"{self.experiment.path}: dataset: fold {fold}: no validation "
                              f"set: {exc}") from exc
        return {"test": test, "validation": val, "training": sorted(set(rest) - set(val))}

    # ------------------------------------------------------------------ per fold

    def _fold_dir(self, fold: int) -> Path:
        return self.dataset_dir / f"fold{fold}"

    def _inputs_file(self, fold: int, size: int) -> Path:
        return self._fold_dir(fold) / f"inputs_{size}.json"

    def _build_fold(self, fold: int, size: int, progress: bool) -> None:
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
                ild_split.write_filtered_source(self.patients, units.slices_of(set(members)),
                                                source)
            folds_csv = ild_split.write_build_folds(fdir / f"{name}_folds.csv", groups, units)
            dest = fdir / f"{name}_{size}"
            if (dest / "manifest.json").is_file():
                continue
            cfg = dataclasses.replace(self.config, folds_csv=str(folds_csv), only_folds=(1,),
                                      **{SIZE_KEY[self.level]: size})
            try:
                build(source, dest, cfg, progress=progress)
            except ild_io.IldDataError as exc:
                role = "training" if name == "train" else "validation"
                raise ild_io.IldDataError(f"fold {fold}, {name} build ({role} units on the "
                                          f"training side): {exc}") from exc
        self._write_inputs(fold, size, parts)

    def _write_inputs(self, fold: int, size: int, parts: dict[str, list[str]]) -> None:
        fdir = self._fold_dir(fold)
        io.write_json(self._inputs_file(fold, size), {
            "fold": fold, "size": size,
            "split_sha256": io.sha256_file(self.dataset_dir / SPLIT_FILE),
            "train_manifest_sha256": io.sha256_file(fdir / f"train_{size}" / "manifest.json"),
            "eval_manifest_sha256": io.sha256_file(fdir / f"eval_{size}" / "manifest.json"),
            "train": f"fold{fold}/train_{size}: fold1/train (training units)",
            "val": f"fold{fold}/eval_{size}: fold1/train (validation units)",
            "test": f"fold{fold}/eval_{size}: fold1/test (test units)",
            "units": {role: len(parts[role]) for role in ("training", "validation", "test")},
        }, indent=1)

    def _ensure_fold(self, fold: int, size: int, progress: bool) -> None:
        if self._inputs_file(fold, size).is_file():
            return
        try:
            self._build_fold(fold, size, progress)
        except (ild_io.IldDataError, DicomError) as exc:  # unusable source data
            raise InputError(f"{self.experiment.path}: dataset.source: {exc}") from exc

    def is_built(self) -> bool:
        return all(self._inputs_file(fold, size).is_file()
                   for fold in self.folds for size in self.sizes)

    def prepare(self, progress: bool = True) -> None:
        """Build every fold the spec lists, for every input size its models read."""
        for fold in self.folds:
            for size in self.sizes:
                self._ensure_fold(fold, size, progress)

    @staticmethod
    def _database(build_dir: Path, role: str) -> dict[str, Any]:
        manifest = json.loads((build_dir / "manifest.json").read_text())
        return next(d for d in manifest["databases"] if d["role"] == role and d["fold"] == 1)

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        size = model.image_size
        self._ensure_fold(fold, size, progress=True)
        fdir = self._fold_dir(fold)
        train_build, eval_build = f"train_{size}", f"eval_{size}"
        train = _in_build(train_build, self._database(fdir / train_build, "train"))
        val = _in_build(eval_build, self._database(fdir / eval_build, "train"))
        test = _in_build(eval_build, self._database(fdir / eval_build, "test"))
        return self.fold_from(train, val, test, root=fdir,
                              manifest=self._inputs_file(fold, size))

    # ------------------------------------------------------------------ outputs

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per test record: its patient, slice (patch: ROI id and position), truth, the
        predicted class and the six class probabilities."""
        index = read_csv(fold.test_index)
        k = len(self.class_names)
        if len(index) != len(probs):
            raise InputError(f"{fold.test_index}: {len(index)} rows for {len(probs)} outputs")
        if probs.ndim != 2 or probs.shape[1] != k:
            raise RunError(f"expected ({len(index)}, {k}) class probabilities, got "
                           f"{probs.shape}")
        return [self._prediction(r, p) for r, p in zip(index, probs, strict=True)]

    def _prediction(self, r: dict[str, str], p: np.ndarray) -> dict[str, Any]:
        names = self.class_names
        label = int(r["label"])
        predicted = int(np.argmax(p))
        if self.level == "slice":
            full = list(self.config.classes)
            labels = [names[full.index(n)] for n in r["labels"].split("|")]
            sample = f"{r['patient_id']}/{r['slice']}/{names[label]}"
            roi, row, col = "", "", ""
        else:
            labels = [names[label]]
            roi, row, col = r["roi"], r["row"], r["col"]
            sample = f"{roi}/{row}/{col}"
        return {"sample_id": sample, "patient_id": r["patient_id"], "slice": int(r["slice"]),
                "roi": roi, "row": row, "col": col, "labels": "|".join(labels),
                "label": label, "truth": names[label], "predicted": predicted,
                "predicted_name": names[predicted],
                **{f"p_{n}": float(v) for n, v in zip(names, p, strict=True)}}

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_classification(rows, self.class_names, self.level)

    def report(self, ctx: ReportContext) -> ReportBody:
        return classification_report(ctx, IldStudy(
            level=self.level, split=self.config.split, class_names=self.class_names,
            prior=self.prior, record=self.split(),
            folds_file=shown(self.dataset_dir / "folds.csv")))

    def provenance_extra(self) -> list[str]:
        if self.config.split != "cv5" or self.config.folds_csv is not None:
            return []
        rule = ild_split.OUTER_SPLIT
        return [f"outer folds: {rule.value}: {rule.assumed}"]
