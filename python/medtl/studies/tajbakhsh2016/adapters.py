"""Study adapters of Tajbakhsh 2016's four applications (`medtl run`).

Each adapter builds (once, cached by the core under the dataset's key) the application's
dataset from a candidate manifest: the kit's phantoms with `source: synthetic` (settings under
`dataset.phantom`), else the user's manifest at `source` (a folder holding candidates.csv, or
the CSV itself; relative to the spec's folder). Each run gets

- its training set: `full/` for data fraction 1.0, the group-level reduction of that
  fraction otherwise (`reduced_50pct/` ...; the builder's `reductions` must list it), or the
  one-group set for `adapter.single_group_fraction`; every one of them validates on
  `full/val_lmdb`, 20% of the training data (Tajbakhsh Sec. VI), and the driver keeps the
  epoch of highest validation AUC;
- its test set and scoring: per-candidate means of the patch probabilities scored by FROC
  (polyp, PE) or ROC (frames); for the intima-media study, the net applied at every test ROI
  pixel, the per-column maxima and open snakes, scored by boundary error (`evaluate`).

`dataset.options` holds the builder's options (PolypConfig, PeConfig, FramesConfig,
ImtConfig) plus `adapter:`, the scoring options of `medtl.studies.tajbakhsh2016.scoring`
(PolypOptions, ...).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medtl import io
from medtl.config import protocol_values
from medtl.datasets.formats.candidates import (
    MANIFEST,
    check_against_images,
    read_candidates,
)
from medtl.datasets.formats.images import read_gray
from medtl.datasets.splits import SINGLE, reduction_name
from medtl.errors import ConfigError, InputError
from medtl.experiments.report.context import ReportBody, ReportContext, read_csv
from medtl.experiments.study import FoldData, RunInputs, StudyAdapter
from medtl.metrics.froc import INTERPOLATION as FROC_INTERPOLATION
from medtl.metrics.roc import INTERPOLATION as ROC_INTERPOLATION
from medtl.nets.registry import ModelSpec, get_model
from medtl.studies.tajbakhsh2016.applications import APPLICATIONS, build
from medtl.studies.tajbakhsh2016.apps.imt import TEST_ROIS_CSV, read_test_rois
from medtl.studies.tajbakhsh2016.dense import INTERFACES, DenseNet
from medtl.studies.tajbakhsh2016.phantoms import PHANTOMS
from medtl.studies.tajbakhsh2016.report import tajbakhsh_report
from medtl.studies.tajbakhsh2016.scoring import (
    OPTIONS,
    link_lesions,
    score_frames,
    score_pe,
    score_polyp,
    summarise_errors,
)


class TajbakhshAdapter(StudyAdapter):
    """What the four applications share; subclasses add their test-set metadata and score."""

    paper = "tajbakhsh2016"
    application: ClassVar[str] = ""       # medtl.studies.tajbakhsh2016.applications key
    scoring_key = "adapter"
    source_file = MANIFEST
    split_help = "Tajbakhsh 2016 has one training / test split (use folds: [1])"
    source_help = (f"a folder holding {MANIFEST}, or the candidate manifest itself; see "
                   "data_prep/CANDIDATE_MANIFEST.md")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An application's options, scoring options and phantoms follow from its name."""
        if cls.application:
            cls.options_class = APPLICATIONS[cls.application][0]
            cls.scoring_class = OPTIONS[cls.application]
            cls.phantom_class = PHANTOMS[cls.application][0]
        super().__init_subclass__(**kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        return APPLICATIONS[self.application][1].classes

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        path = self.experiment.path
        for cfg in self.experiment.configurations:
            self._check_model(get_model(cfg.model))
            if cfg.num_classes.value != len(self.classes):
                raise ConfigError(f"{path}: configurations: {cfg.id} has "
                                  f"{cfg.num_classes.value} classes, the {self.application} "
                                  f"data {len(self.classes)}")

    def _check_model(self, model: ModelSpec) -> None:
        if model.crop_size != self.config.patch_size:
            raise ConfigError(f"{self.experiment.path}: dataset.options.patch_size is "
                              f"{self.config.patch_size} but {model.name} takes "
                              f"{model.crop_size} x {model.crop_size} inputs; patches are "
                              "stored at the net's input size (no crop)")

    def check_fraction(self, fraction: float) -> None:
        self.training_set(fraction)

    def training_set(self, fraction: float) -> str:
        """The dataset folder of a data fraction's training set."""
        if fraction == 1.0:
            return "full"
        single = self.scoring.single_group_fraction
        if single is not None and math.isclose(fraction, single):
            if not self.config.single_group:
                raise ConfigError(f"{self.experiment.path}: data_fractions: {fraction:g} is "
                                  "adapter.single_group_fraction but the dataset has no "
                                  "one-group training set (set single_group: true)")
            return SINGLE
        for reduction in self.config.reductions:
            if math.isclose(fraction, reduction):
                return reduction_name(reduction)
        known = ", ".join(f"{r:g}" for r in [1.0, *self.config.reductions])
        raise ConfigError(f"{self.experiment.path}: data_fractions: {fraction:g} is not one "
                          f"of the dataset's training sets ({known}"
                          + (f", {single:g} = one group" if single is not None else "")
                          + "); add it to dataset.options.reductions")

    # ------------------------------------------------------------------ data

    def write_phantoms(self, dest: Path) -> None:
        args = {k: tuple(v) if isinstance(v, list) else v
                for k, v in self.phantom_args().items()}
        PHANTOMS[self.application][1](dest, **args)

    def build(self, source: Path, dest: Path, progress: bool) -> None:
        build(self.application, source, dest, self.config, progress=progress)

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        self._check_model(model)
        self.prepare()
        dbs = {d["path"]: d for d in self.manifest()["databases"]}
        name = self.training_set(fraction)
        try:
            train, val = dbs[f"{name}/train_lmdb"], dbs["full/val_lmdb"]
        except KeyError as exc:
            raise InputError(f"{self.dataset_dir}: no {exc.args[0]} (rebuild the dataset "
                             "with this reduction)") from None
        return self.fold_from(train, val, self.test_record(dbs))

    def test_record(self, dbs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The manifest record of the test set."""
        test = dbs.get("test_lmdb")
        if test is None:
            raise ConfigError(f"{self.dataset_dir}: no test_lmdb (build_test is false or "
                              "the manifest has no test candidates)")
        return test

    # ------------------------------------------------------------------ test set

    def test_candidates(self, ids: set[str]) -> dict[str, Any]:
        """The manifest's Candidate objects of `ids` (geometry, masks)."""
        schema = APPLICATIONS[self.application][1].schema
        cands = [c for c in read_candidates(Path(self.manifest()["notes"]["manifest_csv"]),
                                            schema, check_images=False)
                 if c.candidate_id in ids]
        if self.application == "polyp":  # labels from masks: read the test frames only
            cands = check_against_images(cands, schema)
        return {c.candidate_id: c for c in cands}

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per candidate: the mean of its patches' positive-class probabilities (Sec. VI)."""
        return self.describe([{"candidate_id": row["candidate_id"], "group": row["patient_id"],
                               "label": int(row["label"]), "patches": patches, "score": score}
                              for row, patches, score in self.candidate_means(fold, probs)])

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add what the scoring needs beyond the score (lesions, frames)."""
        return rows

    # ------------------------------------------------------------------ reports

    def report(self, ctx: ReportContext) -> ReportBody:
        return tajbakhsh_report(ctx, self)

    def provenance_extra(self) -> list[str]:
        interpolation = FROC_INTERPOLATION if self.application in ("polyp", "pe") \
            else ROC_INTERPOLATION
        return [f"operating points read off the curves by {interpolation.value} "
                f"interpolation: {interpolation.assumed}"]


# ------------------------------------------------------------------ polyp detection

class PolypAdapter(TajbakhshAdapter):
    builder = "tajbakhsh_polyp"
    application = "polyp"
    studies = ("polyp",)

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cands = self.test_candidates({r["candidate_id"] for r in rows})
        root = Path(self.manifest()["notes"]["manifest_csv"]).parent
        lesions = polyp_lesions([cands[r["candidate_id"]] for r in rows])
        out = []
        for r in rows:
            c = cands[r["candidate_id"]]
            lesion, frame_lesions = lesions[c.candidate_id]
            x0, y0, x1, y1 = c.box
            out.append({**r, "frame": _relative(c.image, root), "lesion": lesion,
                        "frame_lesions": frame_lesions, "x0": x0, "y0": y0, "x1": x1,
                        "y1": y1})
        return out

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_polyp(rows, self.scoring)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def polyp_lesions(cands: list[Any]) -> dict[str, tuple[str, int]]:
    """candidate_id -> (the polyp it hits, "" for none; the polyps of its frame).

    A polyp is one 8-connected region of the frame's mask; a positive candidate hits the
    region holding its box centre, else the nearest one; without a mask a frame with
    positive candidates holds one polyp (see scoring.POLYP_HIT_RULE)."""
    from scipy import ndimage

    by_frame: dict[Path, list[Any]] = defaultdict(list)
    for c in cands:
        by_frame[c.image].append(c)
    out: dict[str, tuple[str, int]] = {}
    for frame_cands in by_frame.values():
        mask = next((c.mask for c in frame_cands if c.mask is not None), None)
        positives = [c for c in frame_cands if c.label == 1]
        if mask is None:
            hits, n = {c.candidate_id: "1" for c in positives}, int(bool(positives))
        else:
            regions, n = ndimage.label(read_gray(mask) > 0, structure=np.ones((3, 3)))
            hits = _mask_hits(positives, regions, n)
            n += int("unmasked" in hits.values())
        for c in frame_cands:
            out[c.candidate_id] = (hits.get(c.candidate_id, ""), n)
    return out


def _mask_hits(positives: list[Any], regions: np.ndarray, n: int) -> dict[str, str]:
    """Region of each positive candidate's box centre, else the nearest region; "unmasked"
    (a polyp of its own) for a positive label on an empty mask."""
    from scipy import ndimage

    if n == 0:
        return {c.candidate_id: "unmasked" for c in positives}
    if not positives:
        return {}
    _, (near_r, near_c) = ndimage.distance_transform_edt(regions == 0, return_indices=True)
    hits = {}
    for c in positives:
        cx, cy = c.box_centre
        row = min(math.floor(cy), regions.shape[0] - 1)
        col = min(math.floor(cx), regions.shape[1] - 1)
        hits[c.candidate_id] = str(int(regions[near_r[row, col], near_c[row, col]]))
    return hits


# ------------------------------------------------------------------ PE detection

class PeAdapter(TajbakhshAdapter):
    builder = "tajbakhsh_pe"
    version = 3  # 2: 6 rotations; cross-section in Caffe channel 2; 3: ITK's B-spline edges
    application = "pe"
    studies = ("pe",)

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cands = self.test_candidates({r["candidate_id"] for r in rows})
        by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_patient[r["group"]].append(r)
        lesion: dict[str, str] = {}
        count: dict[str, int] = {}
        for patient, members in by_patient.items():
            positives = [r for r in members if r["label"] == 1]
            centres = np.array([cands[r["candidate_id"]].centre for r in positives]
                               ).reshape(-1, 3)
            ids = link_lesions(centres, self.scoring.link_mm)
            for r, k in zip(positives, ids, strict=True):
                lesion[r["candidate_id"]] = str(int(k) + 1)
            count[patient] = len(set(ids.tolist()))
        out = []
        for r in rows:
            cx, cy, cz = cands[r["candidate_id"]].centre
            out.append({**r, "lesion": lesion.get(r["candidate_id"], ""),
                        "group_lesions": count[r["group"]], "cx": cx, "cy": cy, "cz": cz})
        return out

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_pe(rows, self.scoring)


# ------------------------------------------------------------------ frame classification

class FramesAdapter(TajbakhshAdapter):
    builder = "tajbakhsh_frame"
    application = "frames"
    studies = ("frame",)

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_frames(rows, self.scoring)


# ------------------------------------------------------------------ intima-media boundaries

class ImtAdapter(TajbakhshAdapter):
    """Three classes; the validation AUC merges both interfaces into positive (Sec. VII,
    Fig. 10); the test ROIs are scored densely (`evaluate`), not from a test database."""

    builder = "tajbakhsh_imt"
    application = "imt"
    studies = ("imt",)
    positive_classes = (1, 2)

    def test_record(self, dbs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        rois = self.dataset_dir / TEST_ROIS_CSV
        count = len(read_csv(rois)) if rois.is_file() else 0
        if count == 0:
            raise ConfigError(f"{self.dataset_dir}: no test ROIs ({TEST_ROIS_CSV})")
        return {"path": TEST_ROIS_CSV, "index_file": TEST_ROIS_CSV, "count": count}

    def evaluate(self, run: RunInputs) -> dict[str, Any]:
        """Dense application, per-column maxima, snakes, boundary errors; writes
        predictions.csv (one row per ROI column) and maps/roi_NNNNN.npz."""
        opts = self.scoring
        net = DenseNet(run.run_dir / "net" / "deploy.prototxt", run.weights,
                       run.fold.mean_file, run.gpu)
        rows: list[dict[str, Any]] = []
        per_roi: list[dict[str, Any]] = []
        for roi in read_test_rois(self.dataset_dir):
            traced = net.trace(roi, opts.snake, batch=opts.dense_batch)
            with io.atomic_path(run.run_dir / "maps" / f"roi_{roi.roi:05d}.npz") as tmp:
                np.savez_compressed(tmp, **traced.arrays())
            per_roi.append(traced.errors(opts.pixel_size) | {
                "roi": roi.roi, "candidate_id": roi.candidate_id,
                "subject": roi.patient_id})
            rows += traced.rows(roi)
        io.write_csv(run.run_dir / "predictions.csv", rows)
        return summarise_rois(per_roi, opts.n_boot, opts.bootstrap_seed, opts.pixel_size,
                              opts.snake)

    def provenance_extra(self) -> list[str]:
        return []   # scored by boundary errors: no curve is read at operating points


def summarise_rois(per_roi: list[dict[str, Any]], n_boot: int, seed: int, pixel_size: float,
                   snake: Any) -> dict[str, Any]:
    """Per interface (and for the thickness): box statistics and the mean's interval."""
    subjects = [r["subject"] for r in per_roi]
    out: dict[str, Any] = {"application": "imt", "rois": len(per_roi),
                           "subjects": len(set(subjects)),
                           "units": "pixels" if pixel_size == 1.0 else f"x {pixel_size:g}",
                           "per_roi": per_roi, "snake": protocol_values(snake)}
    for key in (*INTERFACES, "thickness"):
        snake_err = np.array([r[f"{key}_error"] for r in per_roi])
        step_err = np.array([r[f"{key}_step_error"] for r in per_roi])
        out[key] = summarise_errors(snake_err, subjects, n_boot, seed)
        out[key]["column_max_mean"] = float(step_err.mean())
    return out


ADAPTER_CLASSES = (PolypAdapter, PeAdapter, FramesAdapter, ImtAdapter)
