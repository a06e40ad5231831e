"""Shin et al. 2016 lymph-node study: TCIA CT Lymph Nodes (or the kit's phantoms in that
format) -> 2.5D-view LMDBs per fold; per-candidate predictions scored by FROC and ROC."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medtl import config as data_config
from medtl.config import ConfigError
from medtl.datasets.manifest import sha256_file
from medtl.experiments.datasets_common import FoldData, options_key, source_root
from medtl.experiments.spec import Experiment
from medtl.metrics.froc import AREA_MAX_FP
from medtl.nets.registry import ModelSpec, get_model

# ------------------------------------------------------------------ Shin: lymph nodes

HIT_RULE = ("a candidate hits the node it is linked to (TCIA MED_ABD_LYMPH_CANDIDATES "
            "grtIDs; phantoms: the node it was placed on); each node counts once, at its "
            "best-scoring hit; other hits on it are neither TP nor FP")


class ShinLnAdapter:
    """TCIA CT Lymph Nodes (or the kit's phantoms in that format) -> 2.5D-view LMDBs."""

    positive_classes = (1,)

    def __init__(self, experiment: Experiment) -> None:
        from medtl.studies.shin2016.ln.dataset import LnConfig

        self.experiment = experiment
        ds = experiment.dataset
        options = dict(ds.options)
        sizes = sorted({get_model(c.model).image_size for c in experiment.configurations})
        options.setdefault("output_sizes", sizes)
        self.config = data_config.from_mapping(LnConfig, options,
                                               where=f"{experiment.path}: dataset.options")
        missing = sorted(set(sizes) - set(self.config.output_sizes))
        if missing:
            raise ConfigError(f"{experiment.path}: dataset.options.output_sizes lacks {missing} "
                              "needed by the spec's models")
        self.data_root = experiment.results_dir / "data"
        self.dataset_dir = self.data_root / f"ln_{self.config.region}_{options_key(options)}"

    def _collection(self) -> Path:
        ds = self.experiment.dataset
        if ds.source != "synthetic":
            return source_root(self.experiment, "the TCIA CT Lymph Nodes collection root")
        from medtl.studies.shin2016.ln.phantoms import write_collection

        phantom = dict(ds.phantom)
        dest = self.data_root / f"phantoms_{options_key(phantom)}"
        if not dest.is_dir():
            write_collection(dest, regions=(self.config.region,), **phantom)
        return dest

    def prepare(self, progress: bool = True) -> None:
        from medtl.studies.shin2016.ln.dataset import build

        if not (self.dataset_dir / "manifest.json").is_file():
            build(self._collection(), self.dataset_dir, self.config, progress=progress)

    def _manifest(self) -> dict[str, Any]:
        return json.loads((self.dataset_dir / "manifest.json").read_text())

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        if fraction != 1.0:
            raise ConfigError(f"{self.experiment.path}: data_fractions: the lymph-node study "
                              "trains on whole folds (use 1.0)")
        self.prepare()
        size = model.image_size
        dbs = {(d["role"], d["fold"], d["shape"][-1]): d for d in self._manifest()["databases"]}
        try:
            train, val, test = (dbs[(role, fold, size)] for role in ("train", "val", "test"))
        except KeyError:
            raise ConfigError(f"{self.dataset_dir}: no fold {fold} databases of size {size} "
                              "(rebuild the dataset with these folds and output_sizes)"
                              ) from None
        root = self.dataset_dir
        return FoldData(train=str(root / train["path"]), val=str(root / val["path"]),
                        mean_file=str(root / train["mean_file"]), test=str(root / test["path"]),
                        test_index=str(root / test["index_file"]), train_size=train["count"],
                        val_size=val["count"], test_size=test["count"],
                        manifest_sha256=sha256_file(root / "manifest.json"))

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per candidate: the mean of its views' node probabilities (Shin Sec. II)."""
        with open(fold.test_index, newline="") as f:
            index = list(csv.DictReader(f))
        if len(index) != len(probs):
            raise ValueError(f"{fold.test_index}: {len(index)} rows for {len(probs)} outputs")
        views: dict[str, list[float]] = defaultdict(list)
        meta: dict[str, dict[str, str]] = {}
        for row, p in zip(index, probs, strict=True):
            views[row["candidate_id"]].append(float(p[1]))
            meta[row["candidate_id"]] = row
        return [{"candidate_id": cid, "patient_id": meta[cid]["patient_id"],
                 "label": int(meta[cid]["label"]), "node": meta[cid]["node"],
                 "x": meta[cid]["x"], "y": meta[cid]["y"], "z": meta[cid]["z"],
                 "views": len(v), "score": float(np.mean(v))}
                for cid, v in views.items()]

    def nodes_of(self, patients: set[str]) -> dict[str, int]:
        counts = dict.fromkeys(patients, 0)
        with open(self.dataset_dir / "nodes.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["patient_id"] in counts:
                    counts[row["patient_id"]] += 1
        return counts

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_candidates(rows, self.nodes_of({r["patient_id"] for r in rows}),
                                seed=0)


def score_candidates(rows: list[dict[str, Any]], nodes_per_patient: dict[str, int], *,
                     seed: int, n_boot: int = 1000) -> dict[str, Any]:
    """FROC (per patient) and candidate-level ROC of per-candidate scores."""
    from medtl.metrics import delong_auc, froc_bootstrap

    scores = np.array([r["score"] for r in rows], dtype=float)
    groups = np.array([r["patient_id"] for r in rows])
    numbering: dict[str, int] = {}
    lesion_ids = np.array([
        numbering.setdefault(f"{r['patient_id']}/{r['node']}", len(numbering))
        if r["label"] and r["node"] != "" else -1 for r in rows])
    per_group = dict(nodes_per_patient)
    froc = froc_bootstrap(scores, groups, lesion_ids, per_group, n_groups=len(per_group),
                          fp_rates=(1.0, 3.0), max_fp=AREA_MAX_FP.value, n_boot=n_boot,
                          seed=seed)
    labels = np.array([int(r["label"]) for r in rows])
    roc = delong_auc(labels, scores) if 1 < labels.sum() < len(labels) - 1 else None
    return {
        "hit_rule": HIT_RULE,
        "froc_max_fp": AREA_MAX_FP.to_dict(),
        "tpr_at_3fp": froc.sensitivity[3.0].to_dict(),
        "tpr_at_1fp": froc.sensitivity[1.0].to_dict(),
        "froc_area": froc.area.to_dict(),
        "froc_luna_average": froc.average_sensitivity.to_dict(),
        "froc_curve": {"fp_per_patient": froc.curve.fp_per_group.tolist(),
                       "sensitivity": froc.curve.sensitivity.tolist()},
        "candidate_roc_auc": None if roc is None else {
            "estimate": roc.auc, "low": roc.interval.low, "high": roc.interval.high,
            "method": "DeLong"},
        "patients": len(per_group), "nodes": int(sum(per_group.values())),
        "candidates": len(rows),
    }
