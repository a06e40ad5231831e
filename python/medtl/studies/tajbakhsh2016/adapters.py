"""Experiment adapters for Tajbakhsh 2016's four applications (`medtl run`).

Each adapter builds (once, cached by its options) the application's dataset from a candidate
manifest — the kit's phantoms with `source: synthetic`, else the user's manifest at
`source` (a folder holding candidates.csv, or the CSV itself) — and gives each run:

- its training set: `full/` for data fraction 1.0, the group-level reduction of that
  fraction otherwise (`reduced_50pct/` ...; the builder's `reductions` must list it), or the
  one-group set for `adapter.single_group_fraction`; every one of them validates on
  `full/val_lmdb`, 20% of the training data (Tajbakhsh Sec. VI), and the driver keeps the
  epoch of highest validation AUC;
- its test set and scoring: per-candidate means of the patch probabilities scored by FROC
  (polyp, PE) or ROC (frames); for the intima-media study, the net applied at every test ROI
  pixel, the per-column maxima and open snakes, scored by boundary error (`evaluate`).

`dataset.options` holds the builder's options (PolypConfig, PeConfig, FramesConfig,
ImtConfig) plus `adapter:`, the scoring options of `tajbakhsh_scoring` (PolypOptions, ...).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medtl.config import ConfigError, from_mapping
from medtl.datasets.manifest import sha256_file
from medtl.datasets.splits import SINGLE, reduction_name
from medtl.experiments.spec import REPO, Experiment, RunPlan
from medtl.nets.registry import ModelSpec, get_model
from medtl.protocols import Configuration
from medtl.studies.tajbakhsh2016.dense import INTERFACES
from medtl.studies.tajbakhsh2016.scoring import (
    OPTIONS,
    link_lesions,
    score_frames,
    score_pe,
    score_polyp,
    summarise_errors,
)

if TYPE_CHECKING:  # datasets.py registers these adapters: no import of it at run time
    from medtl.experiments.datasets import FoldData

MANIFEST_CSV = "candidates.csv"


def _options_key(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()
                          ).hexdigest()[:10]


def _read_index(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class TajbakhshAdapter:
    """What the four applications share; subclasses add their test-set metadata and score."""

    application = ""                 # medtl.studies.tajbakhsh2016.applications key
    study = ""                       # the protocol's study id
    positive_classes: tuple[int, ...] = (1,)
    report_kind = "tajbakhsh"

    def __init__(self, experiment: Experiment) -> None:
        from medtl.studies.tajbakhsh2016.applications import APPLICATIONS, config_class

        self.experiment = experiment
        where = f"{experiment.path}: dataset.options"
        options = dict(experiment.dataset.options)
        scoring = options.pop("adapter", None) or {}
        self.options = from_mapping(OPTIONS[self.application], scoring,
                                    where=f"{where}.adapter")
        self.config = from_mapping(config_class(self.application), options, where=where)
        self.classes = APPLICATIONS[self.application][1].classes
        if experiment.spec.study != self.study:
            raise ConfigError(f"{experiment.path}: dataset.builder {self._builder} serves the "
                              f"study {self.study!r}, not {experiment.spec.study!r}")
        for cfg in experiment.configurations:
            self._check_model(get_model(cfg.model))
            if cfg.num_classes.value != len(self.classes):
                raise ConfigError(f"{experiment.path}: {cfg.id} has {cfg.num_classes.value} "
                                  f"classes, the {self.application} data {len(self.classes)}")
        for fraction in experiment.spec.data_fractions:
            self.training_set(fraction)
        ds = experiment.dataset
        self.data_root = experiment.results_dir / "data"
        self.dataset_dir = self.data_root / (
            f"{self.application}_"
            f"{_options_key({'options': options, 'source': ds.source, 'phantom': ds.phantom})}")

    @property
    def _builder(self) -> str:
        return self.experiment.dataset.builder

    def _check_model(self, model: ModelSpec) -> None:
        if model.crop_size != self.config.patch_size:
            raise ConfigError(f"{self.experiment.path}: dataset.options.patch_size is "
                              f"{self.config.patch_size} but {model.name} takes "
                              f"{model.crop_size} x {model.crop_size} inputs; patches are "
                              "stored at the net's input size (no crop)")

    # ------------------------------------------------------------------ data

    def training_set(self, fraction: float) -> str:
        """The dataset folder of a data fraction's training set."""
        if fraction == 1.0:
            return "full"
        single = self.options.single_group_fraction
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

    def manifest_csv(self) -> Path:
        """The candidate manifest: phantoms written once, or the user's."""
        ds = self.experiment.dataset
        if ds.source != "synthetic":
            root = REPO / Path(ds.source).expanduser()  # relative sources: to the repository
            path = root / MANIFEST_CSV if root.is_dir() else root
            if not path.is_file():
                raise ConfigError(f"{self.experiment.path}: dataset.source: {path} does not "
                                  f"exist (a folder holding {MANIFEST_CSV}, or the candidate "
                                  "manifest itself; see data_prep/CANDIDATE_MANIFEST.md)")
            return path
        from medtl.studies.tajbakhsh2016 import phantoms as ph

        writers = {"polyp": ph.write_polyp_collection, "pe": ph.write_pe_collection,
                   "frames": ph.write_frame_collection, "imt": ph.write_imt_collection}
        phantom = {k: tuple(v) if isinstance(v, list) else v for k, v in ds.phantom.items()}
        dest = self.data_root / f"phantoms_{self.application}_{_options_key(ds.phantom)}"
        if not (dest / MANIFEST_CSV).is_file():
            try:
                writers[self.application](dest, **phantom)
            except TypeError as exc:
                raise ConfigError(f"{self.experiment.path}: dataset.phantom: {exc}") from None
        return dest / MANIFEST_CSV

    def prepare(self, progress: bool = True) -> None:
        from medtl.studies.tajbakhsh2016.applications import build

        if not (self.dataset_dir / "manifest.json").is_file():
            self.data_root.mkdir(parents=True, exist_ok=True)
            build(self.application, self.manifest_csv(), self.dataset_dir, self.config,
                  progress=progress)

    def _databases(self) -> dict[str, dict[str, Any]]:
        manifest = json.loads((self.dataset_dir / "manifest.json").read_text())
        return {d["path"]: d for d in manifest["databases"]}

    def _test_set(self, dbs: dict[str, dict[str, Any]]) -> tuple[str, str, int]:
        test = dbs.get("test_lmdb")
        if test is None:
            raise ConfigError(f"{self.dataset_dir}: no test_lmdb (build_test is false or "
                              "the manifest has no test candidates)")
        root = self.dataset_dir
        return str(root / test["path"]), str(root / test["index_file"]), test["count"]

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        from medtl.experiments.datasets import FoldData

        if fold != 1:
            raise ConfigError(f"{self.experiment.path}: folds: Tajbakhsh 2016 has one "
                              "training / test split (use folds: [1])")
        self._check_model(model)
        self.prepare()
        dbs = self._databases()
        name = self.training_set(fraction)
        try:
            train, val = dbs[f"{name}/train_lmdb"], dbs["full/val_lmdb"]
        except KeyError as exc:
            raise ConfigError(f"{self.dataset_dir}: no {exc.args[0]} (rebuild the dataset "
                              "with this reduction)") from None
        test, index, count = self._test_set(dbs)
        root = self.dataset_dir
        return FoldData(train=str(root / train["path"]), val=str(root / val["path"]),
                        mean_file=str(root / train["mean_file"]), test=test, test_index=index,
                        train_size=train["count"], val_size=val["count"], test_size=count,
                        manifest_sha256=sha256_file(root / "manifest.json"))

    # ------------------------------------------------------------------ test set

    def test_candidates(self, ids: set[str]) -> dict[str, Any]:
        """The manifest's Candidate objects of `ids` (geometry, masks)."""
        from medtl.datasets.formats.candidates import check_against_images, read_candidates
        from medtl.studies.tajbakhsh2016.applications import APPLICATIONS

        manifest = json.loads((self.dataset_dir / "manifest.json").read_text())
        schema = APPLICATIONS[self.application][1].schema
        cands = [c for c in read_candidates(Path(manifest["notes"]["manifest_csv"]), schema,
                                            check_images=False) if c.candidate_id in ids]
        if self.application == "polyp":  # labels from masks: read the test frames only
            cands = check_against_images(cands, schema)
        return {c.candidate_id: c for c in cands}

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per candidate: the mean of its patches' positive-class probabilities (Sec. VI)."""
        index = _read_index(fold.test_index)
        if len(index) != len(probs):
            raise ValueError(f"{fold.test_index}: {len(index)} rows for {len(probs)} outputs")
        patches: dict[str, list[float]] = defaultdict(list)
        meta: dict[str, dict[str, str]] = {}
        for row, p in zip(index, probs, strict=True):
            patches[row["candidate_id"]].append(float(sum(p[c] for c in
                                                          self.positive_classes)))
            meta[row["candidate_id"]] = row
        rows = [{"candidate_id": cid, "group": meta[cid]["patient_id"],
                 "label": int(meta[cid]["label"]), "patches": len(v),
                 "score": float(np.mean(v))} for cid, v in patches.items()]
        return self.describe(rows)

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add what the scoring needs beyond the score (lesions, frames)."""
        return rows

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        raise NotImplementedError


# ------------------------------------------------------------------ polyp detection

class PolypAdapter(TajbakhshAdapter):
    application = "polyp"
    study = "polyp"

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cands = self.test_candidates({r["candidate_id"] for r in rows})
        root = Path(json.loads((self.dataset_dir / "manifest.json").read_text())
                    ["notes"]["manifest_csv"]).parent
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
        return score_polyp(rows, self.options)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def polyp_lesions(cands: list[Any]) -> dict[str, tuple[str, int]]:
    """candidate_id -> (the polyp it hits, "" for none; the polyps of its frame).

    A polyp is one 8-connected region of the frame's mask; a positive candidate hits the
    region holding its box centre, else the nearest one; without a mask a frame with
    positive candidates holds one polyp (see tajbakhsh_scoring.POLYP_HIT_RULE)."""
    from scipy import ndimage

    from medtl.datasets.formats.images import read_gray

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
    application = "pe"
    study = "pe"

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
            ids = link_lesions(centres, self.options.link_mm)
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
        return score_pe(rows, self.options)


# ------------------------------------------------------------------ frame classification

class FramesAdapter(TajbakhshAdapter):
    application = "frames"
    study = "frame"

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_frames(rows, self.options)


# ------------------------------------------------------------------ intima-media boundaries


class ImtAdapter(TajbakhshAdapter):
    """Three classes; the validation AUC merges both interfaces into positive (Sec. VII,
    Fig. 10); the test ROIs are scored densely (`evaluate`), not from a test database."""

    application = "imt"
    study = "imt"
    positive_classes = (1, 2)

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        from medtl.studies.tajbakhsh2016.boundaries import SnakeParams

        self.snake = from_mapping(SnakeParams, self.options.snake,
                                  where=f"{experiment.path}: dataset.options.adapter.snake")

    def _test_set(self, dbs: dict[str, dict[str, Any]]) -> tuple[str, str, int]:
        rois = self.dataset_dir / "test_rois.csv"
        count = len(_read_index(str(rois))) if rois.is_file() else 0
        if count == 0:
            raise ConfigError(f"{self.dataset_dir}: no test ROIs (test_rois.csv)")
        return str(rois), str(rois), count

    def evaluate(self, plan: RunPlan, cfg: Configuration, fold: FoldData, weights: Path,
                 run_dir: Path) -> dict[str, Any]:
        """Dense application, per-column maxima, snakes, boundary errors; writes
        predictions.csv (one row per ROI column) and maps/roi_NNNNN.npz."""
        from medtl.experiments.runner import write_csv
        from medtl.studies.tajbakhsh2016.apps.imt import read_test_rois
        from medtl.studies.tajbakhsh2016.dense import DenseNet

        net = DenseNet(run_dir / "net" / "deploy.prototxt", weights, fold.mean_file,
                       self.experiment.training.gpu)
        maps_dir = run_dir / "maps"
        maps_dir.mkdir(exist_ok=True)
        rows: list[dict[str, Any]] = []
        per_roi: list[dict[str, Any]] = []
        for roi in read_test_rois(self.dataset_dir):
            traced = net.trace(roi, self.snake, batch=self.options.dense_batch)
            np.savez_compressed(maps_dir / f"roi_{roi.roi:05d}.npz", **traced.arrays())
            per_roi.append(traced.errors(self.options.pixel_size) | {
                "roi": roi.roi, "candidate_id": roi.candidate_id,
                "subject": roi.patient_id})
            rows += traced.rows(roi)
        write_csv(run_dir / "predictions.csv", rows)
        return summarise_rois(per_roi, self.options.n_boot, self.options.bootstrap_seed,
                              self.options.pixel_size, self.snake)

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        raise NotImplementedError("the intima-media study is scored by evaluate()")


def summarise_rois(per_roi: list[dict[str, Any]], n_boot: int, seed: int, pixel_size: float,
                   snake: Any) -> dict[str, Any]:
    """Per interface (and for the thickness): box statistics and the mean's interval."""
    from medtl.config import protocol_values

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
TAJBAKHSH_ADAPTERS = {"tajbakhsh_polyp": PolypAdapter, "tajbakhsh_pe": PeAdapter,
                      "tajbakhsh_frame": FramesAdapter, "tajbakhsh_imt": ImtAdapter}
