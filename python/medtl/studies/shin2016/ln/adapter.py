"""Shin et al. 2016 lymph-node study as runs: TCIA CT Lymph Nodes (or the kit's phantoms in
that format) -> 2.5D-view LMDBs per fold; per-candidate mean probabilities scored by FROC per
patient and candidate-level ROC."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.config import ConfigError, option
from medtl.experiments.report.context import ReportBody, ReportContext, read_csv
from medtl.experiments.study import ExpectedSizes, FoldData, StudyAdapter
from medtl.nets.registry import ModelSpec
from medtl.protocols import Configuration
from medtl.provenance import assumed
from medtl.studies.shin2016.ln.dataset import LnConfig, build
from medtl.studies.shin2016.ln.phantoms import write_collection
from medtl.studies.shin2016.ln.report import froc_report
from medtl.studies.shin2016.ln.scoring import LnScoring, score_candidates

REGION_OF_STUDY = {"ln_mediastinum": "med", "ln_abdomen": "abd"}
# Shin 2016 Sec. II: "388 mediastinal LNs labeled by radiologists in 90 patient CT scans, and
# 595 abdominal LNs in 86 patient CT scans"; "approximately 40 false or negative LN candidates
# per patient scan"
PAPER_NODES = {"med": (388, 90), "abd": (595, 86)}
PAPER_FALSE_PER_PATIENT = 40
# the phantoms (phantoms.make_patient): 3-6 nodes per patient, a node gets a second true
# candidate with probability 0.3
PHANTOM_NODES_PER_PATIENT = 4.5
PHANTOM_CANDIDATES_PER_NODE = 1.3


@dataclass(frozen=True)
class LnPhantoms:
    """The kit's synthetic CT Lymph Nodes collection (`medtl.studies.shin2016.ln.phantoms`),
    written for the region the dataset's options name."""

    patients: int = option(4, "patients of the region", minimum=2)
    seed: int = option(0, "seed of the anatomy, nodes and candidates", minimum=0)
    shape: list[int] = option([60, 96, 96], "volume size (slices, rows, columns)", minimum=8)
    spacing: list[float] = option([2.0, 2.0, 2.5], "voxel spacing (mm): rows, columns, slices",
                                  minimum=0, exclusive_minimum=True)
    n_false: int = option(40, "false CADe candidates per patient", minimum=0)
    noise_hu: float = option(25.0, "scanner noise (HU, standard deviation)", minimum=0)


class ShinLnAdapter(StudyAdapter):
    """TCIA CT Lymph Nodes -> 2.5D-view LMDBs per fold, scored by FROC."""

    builder = "shin_ln"
    version = 3  # 2: views stored in Caffe order (axial in channel 2); 3: ITK's B-spline edges
    paper = "shin2016"
    studies = ("ln_mediastinum", "ln_abdomen")
    options_class = LnConfig
    phantom_class = LnPhantoms
    scoring_key = "scoring"
    scoring_class = LnScoring
    source_help = ("the TCIA CT Lymph Nodes collection: MED_LYMPH_xxx/ or ABD_LYMPH_xxx/, "
                   "MED_ABD_LYMPH_ANNOTATIONS/, MED_ABD_LYMPH_CANDIDATES/")

    def dataset_options(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {"output_sizes": self.model_sizes(), **raw}

    def check(self) -> None:
        where = f"{self.experiment.path}: dataset.options"
        missing = sorted(set(self.model_sizes()) - set(self.config.output_sizes))
        if missing:
            raise ConfigError(f"{where}.output_sizes: lacks {missing}, the input sizes of the "
                              "spec's models")
        region = REGION_OF_STUDY[self.experiment.spec.study]
        if self.config.region != region:
            raise ConfigError(f"{where}.region: {self.config.region!r}, but the study "
                              f"{self.experiment.spec.study} is region {region!r}")
        for key in ("only_folds", "folds_csv"):
            if getattr(self.config, key):
                raise ConfigError(f"{where}.{key}: runs build the folds the dataset "
                                  "options give; remove it")

    def fold_count(self) -> int:
        return self.config.folds

    def phantom_args(self) -> dict[str, Any]:
        return {**super().phantom_args(), "regions": [self.config.region]}

    def write_phantoms(self, dest: Path) -> None:
        args = self.phantom_args()
        write_collection(dest, **{**args, "regions": tuple(args["regions"]),
                                  "shape": tuple(args["shape"]),
                                  "spacing": tuple(args["spacing"])})

    def build(self, source: Path, dest: Path, progress: bool) -> None:
        build(source, dest, self.config, progress=progress)

    def expected_sizes(self, cfg: Configuration, fold: int, fraction: float
                       ) -> ExpectedSizes | None:
        """The views of a fold's training and validation sets from the paper's node and
        candidate counts (the TCIA source) or the phantom settings, by the builder's rules
        (`dataset._train_plan`)."""
        c = self.config
        if self.prepared_path is not None:
            return None
        if self.synthetic:
            patients = self.phantom.patients
            nodes, per_node = patients * PHANTOM_NODES_PER_PATIENT, PHANTOM_CANDIDATES_PER_NODE
            false = self.phantom.n_false
            what = (f"the phantom settings: {patients} patients, 3-6 nodes each (mean "
                    f"{PHANTOM_NODES_PER_PATIENT:g}), {per_node:g} true candidates per node, "
                    f"{false} false candidates per patient")
        else:
            nodes, patients = PAPER_NODES[c.region]
            per_node, false = 1.0, PAPER_FALSE_PER_PATIENT
            what = (f"Shin 2016 Sec. II: {nodes} LNs in {patients} patients, about {false} "
                    "false CADe candidates per patient; one CADe true candidate per LN "
                    "assumed (~100% recall)")
        per_patient = nodes / patients * {"candidates": per_node, "annotations": 1.0,
                                          "both": per_node + 1.0}[c.train_positives]
        training = round(patients * (c.folds - 1) / c.folds)
        val = min(training - 1, max(1, round(c.val_fraction * training)))

        def views(n_patients: int, per_candidate: int) -> int:
            pos = per_patient * n_patients * per_candidate
            neg = false * n_patients * per_candidate
            if c.prior == "equal":
                neg = min(neg, c.negatives_per_positive * pos)
            return round((pos + neg) * fraction)

        rule = (f"{c.prior} prior" + (f", {c.negatives_per_positive:g} negative view(s) per "
                                      "positive" if c.prior == "equal" else ""))
        split = (f"a fold trains on {training - val} and validates on {val} of "
                 f"{patients} patients ({c.folds} folds, {c.val_fraction:g} of the training "
                 "patients validate)")
        tail = "expected, not counted: the manifest gives the count once the dataset is built"
        return ExpectedSizes(
            assumed(views(training - val, c.train_views_per_candidate),
                    f"{what}; {split}; {c.train_views_per_candidate} views per training "
                    f"candidate, {rule}; {tail}"),
            assumed(views(val, c.val_views_per_candidate),
                    f"{what}; {split}; {c.val_views_per_candidate} views per validation "
                    f"candidate, {rule}; {tail}"))

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        self.prepare()
        size = model.image_size
        dbs = {(d["role"], d["fold"], d["shape"][-1]): d for d in self.manifest()["databases"]}
        train, val, test = (dbs[(role, fold, size)] for role in ("train", "val", "test"))
        return self.fold_from(train, val, test)

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per candidate: the mean of its views' node probabilities (Shin Sec. II)."""
        return [{"candidate_id": row["candidate_id"], "patient_id": row["patient_id"],
                 "label": int(row["label"]), "node": row["node"], "x": row["x"],
                 "y": row["y"], "z": row["z"], "views": views, "score": score}
                for row, views, score in self.candidate_means(fold, probs)]

    def nodes(self) -> list[dict[str, str]]:
        """The annotated nodes (the FROC's lesions): nodes.csv rows."""
        return read_csv(self.dataset_dir / "nodes.csv")

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        return score_candidates(rows, self.nodes(), {r["patient_id"] for r in rows}, seed=0,
                                scoring=self.scoring)

    def report(self, ctx: ReportContext) -> ReportBody:
        return froc_report(ctx, self.nodes(), self.scoring)
