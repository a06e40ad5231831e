"""Ravishankar et al. 2016 as runs: CaffeNet FA / PA / NA, then fc7 and Haar features into a
gradient boosting machine, scored by detection accuracy, localisation failures and the number
of filters fine-tuning changed (`medtl.studies.ravishankar2016.evaluation`).

The runner trains each configuration (FA and PA fine-tune; NA freezes every layer, so it
trains nothing) and hands the selected weights to :meth:`KidneyAdapter.evaluate`.

Outputs in the run directory: predictions.csv (per test patch, one score per feature set),
localisation.csv (per test image and feature set), features/<blob>_<role>.h5.

Spec: `dataset.options` are `medtl.studies.ravishankar2016.dataset.KidneyConfig`'s keys, plus
an `evaluation` mapping of `medtl.studies.ravishankar2016.evaluation.KidneyEvaluation`'s keys
(scoring options: not part of the dataset's cache key); `dataset.phantom` are
:class:`KidneyPhantoms`'s keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medtl import io
from medtl.config import ConfigError, option, protocol_values
from medtl.datasets.features import extract
from medtl.datasets.formats.candidates import MANIFEST
from medtl.errors import RunError
from medtl.experiments.report.context import ReportBody, ReportContext, read_csv
from medtl.experiments.study import FoldData, RunInputs, StudyAdapter
from medtl.infer import ArrayNet
from medtl.nets.registry import get_model
from medtl.studies.ravishankar2016.dataset import KidneyConfig, build
from medtl.studies.ravishankar2016.evaluation import (
    DETECTION_RULE,
    ROLES,
    KidneyEvaluation,
    Localiser,
    feature_sets,
    filter_changes,
    fit_and_score,
    localise,
    score_localisation,
)
from medtl.studies.ravishankar2016.haar import HaarBank
from medtl.studies.ravishankar2016.phantoms import write_kidney_collection
from medtl.studies.ravishankar2016.report import kidney_report


@dataclass(frozen=True)
class KidneyPhantoms:
    """The kit's synthetic kidney ultrasound collection
    (`medtl.studies.ravishankar2016.phantoms.write_kidney_collection`)."""

    subjects: int = option(6, "subjects; two thirds (at least 2) train, the rest test",
                           minimum=3)
    images_per_subject: int = option(3, "images per subject", minimum=1)
    size: tuple[int, int] = option((160, 120), "image width and height (pixels)", minimum=32)
    seed: int = option(0, "seed of the tissue, kidneys and speckle", minimum=0)


class KidneyAdapter(StudyAdapter):
    """Kidney candidate manifest (or the kit's phantoms) -> patch LMDBs + Haar features."""

    builder = "ravishankar_kidney"
    paper = "ravishankar2016"
    studies = ("kidney",)
    options_class = KidneyConfig
    scoring_key = "evaluation"
    scoring_class = KidneyEvaluation
    phantom_class = KidneyPhantoms
    source_file = MANIFEST
    split_help = ("the kidney study has one subject-level split: use folds: [1] and "
                  "data_fractions: [1.0]")
    source_help = (f"the kidney candidate manifest, or a folder holding {MANIFEST}; see "
                   "data_prep/CANDIDATE_MANIFEST.md")

    @property
    def evaluation(self) -> KidneyEvaluation:
        return self.scoring

    def check(self) -> None:
        where = f"{self.experiment.path}: dataset.options"
        for cfg in self.experiment.configurations:
            crop = get_model(cfg.model).crop_size
            if self.config.patch_size < crop:
                raise ConfigError(f"{where}: patch_size {self.config.patch_size} is smaller "
                                  f"than {cfg.model}'s input {crop}")

    def write_phantoms(self, dest: Path) -> None:
        args = self.phantom_args()
        write_kidney_collection(dest, **{**args, "size": tuple(args["size"])})

    def build(self, source: Path, dest: Path, progress: bool) -> None:
        build(source, dest, self.config, progress=progress)

    # -------------------------------------------------------------- evaluation

    def evaluate(self, run: RunInputs) -> dict[str, Any]:
        ev, fold = self.evaluation, run.fold
        deploy = run.run_dir / "net" / "deploy.prototxt"
        digest = io.sha256_file(run.weights)
        cnn = {r: self._cnn_features(deploy, run, digest, Path(getattr(fold, r)),
                                     run.run_dir / "features" / f"{ev.feature_blob}_{r}.h5")
               for r in ROLES}
        labels = {r: cnn[r][1] for r in ROLES}
        haar = self._haar_features(labels)
        sets = feature_sets(ev.feature_blob, {r: cnn[r][0] for r in ROLES}, haar)
        classifiers, scores, per_set = fit_and_score(sets, labels, ev, run.seed)
        self._write_predictions(run, fold, labels["test"], scores)

        net = ArrayNet(deploy, run.weights, mean_file=fold.mean_file, gpu=run.gpu)
        bank = (HaarBank(self.config.haar_window, self.config.haar_features)
                if self.config.haar_features else None)
        located = localise(Localiser(net, bank, classifiers, ev, self.config.patch_size),
                           self.dataset_dir,
                           f"{self.experiment.path}: dataset.options.evaluation")
        io.write_csv(run.run_dir / "localisation.csv", located)
        score_localisation(located, per_set)
        return {
            "feature_blob": ev.feature_blob,
            "feature_sets": per_set,
            "changed_filters": filter_changes(run.config.model, run.initial, run.weights),
            "evaluation": protocol_values(ev),
            "detection_rule": DETECTION_RULE,
            "test_patches": len(labels["test"]),
            "test_positives": int(labels["test"].sum()),
            "train_patches": len(labels["train"]),
            "test_images": len({r["image"] for r in located}),
        }

    def _cnn_features(self, deploy: Path, run: RunInputs, digest: str, source: Path,
                      out: Path) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of an LMDB, reusing a finished file of the same weights
        (`digest`: their sha256), as a resumed run does."""
        if out.is_file():
            with h5py.File(out, "r") as f:
                same = f.attrs.get("weights_sha256") == digest
            if not same:
                out.unlink()
        if not out.is_file():
            extract(deploy, run.weights, source, out, blob=self.evaluation.feature_blob,
                    mean_file=Path(run.fold.mean_file), batch=self.evaluation.batch,
                    gpu=run.gpu, progress=False)
        with h5py.File(out, "r") as f:
            return f["features"][...], f["label"][...].astype(int).reshape(-1)

    def _haar_features(self, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The dataset's Haar features per role (None without them), checked to be in the
        LMDBs' record order."""
        if not self.config.haar_features:
            return None
        out = {}
        for r in ROLES:
            path = self.dataset_dir / "haar" / f"{r}.h5"
            with h5py.File(path, "r") as f:
                out[r] = f["features"][...]
                order = f["label"][...].astype(int)
            if not np.array_equal(order, labels[r]):
                raise RunError(f"{path}: labels differ from the {r} LMDB's (the Haar file is "
                               "not in LMDB key order)")
        return out

    def _write_predictions(self, run: RunInputs, fold: FoldData, labels: np.ndarray,
                           scores: dict[str, np.ndarray]) -> None:
        index = read_csv(Path(fold.test_index))
        if len(index) != len(labels):
            raise RunError(f"{fold.test_index}: {len(index)} rows for {len(labels)} test "
                           "patches")
        io.write_csv(run.run_dir / "predictions.csv", [
            {"rank": row["rank"], "sample_id": row["candidate_id"],
             "patient_id": row["patient_id"], "image": row["image"], "label": int(y),
             **{f"score_{name}": float(s[i]) for name, s in scores.items()}}
            for i, (row, y) in enumerate(zip(index, labels, strict=True))])

    def report(self, ctx: ReportContext) -> ReportBody:
        return kidney_report(ctx)
