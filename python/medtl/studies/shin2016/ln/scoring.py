"""The lymph-node study's score: FROC per patient (Shin Table II: sensitivity at 3 false
positives per patient) and candidate-level ROC, from per-candidate scores.

The hit rule is a scoring option (`dataset.options.scoring.hit_rule` of a spec, `LnScoring`):
the collection's candidate -> node links (default), or the LUNA16 evaluation applied to the
node centres and sizes (`medtl.metrics.froc`). Every score and report names the rule used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtl.config import option
from medtl.metrics import LUNA16_MAX_MARKS, delong_auc, froc_bootstrap, luna16_marks
from medtl.metrics.froc import AREA_MAX_FP, LUNA16_UNKNOWN_DIAMETER
from medtl.provenance import assumed

HIT_RULES = {
    "tcia_link": "tcia_link: a candidate hits the node it is linked to (TCIA "
                 "MED_ABD_LYMPH_CANDIDATES grtIDs; phantoms: the node it was placed on); each "
                 "node counts once, at its best-scoring hit; other hits on it are neither TP "
                 "nor FP",
    "luna16": "luna16: the LUNA16 evaluation (noduleCADEvaluationLUNA16.py, medtl.metrics."
              "froc): at most {max_marks} candidates per patient (those above the "
              "({max_marks}+1)-th score); a candidate hits every node whose centre is closer "
              "than half the node's short axis (the smallest of its sizes_mm; "
              "{unknown:g} mm when the collection gives none); each node counts once, at its "
              "best-scoring hit; no node hit gives NaN; the collection lists no excluded "
              "findings",
}


@dataclass(frozen=True)
class LnScoring:
    """How the lymph-node study scores its candidates (`dataset.options.scoring`)."""

    hit_rule: str = option(
        "tcia_link", "which candidate hits which node: tcia_link (the collection's links) or "
                     "luna16 (the LUNA16 evaluation on node centres and short axes)",
        assumed("tcia_link", "Shin 2016 does not say how a candidate is matched to a node; "
                "the collection links every true candidate to its node (grtIDs), which needs "
                "no distance threshold"),
        choices=tuple(HIT_RULES))
    max_marks: int = option(LUNA16_MAX_MARKS.value,
                            "luna16 rule: candidates kept per patient (highest scores)",
                            LUNA16_MAX_MARKS, minimum=1)

    def describe(self) -> str:
        return HIT_RULES[self.hit_rule].format(max_marks=self.max_marks,
                                               unknown=LUNA16_UNKNOWN_DIAMETER.value)


def nodes_per_patient(nodes: Sequence[Mapping[str, str]], patients: Iterable[str]
                      ) -> dict[str, int]:
    """Annotated nodes of each patient (nodes.csv rows), 0 for a patient without any."""
    counts = dict.fromkeys(patients, 0)
    for row in nodes:
        if row["patient_id"] in counts:
            counts[row["patient_id"]] += 1
    return counts


def _short_axis(sizes: str) -> float:
    """The node's short axis (mm) from nodes.csv's sizes_mm; -1 (unknown) when empty."""
    values = [float(s) for s in str(sizes).split()]
    return min(values) if values else -1.0


def _froc(rows: list[dict[str, Any]], nodes: Sequence[Mapping[str, str]],
          per_group: dict[str, int], scoring: LnScoring, seed: int, n_boot: int
          ) -> tuple[Any, dict[str, Any]]:
    scores = np.array([float(r["score"]) for r in rows], dtype=float)
    groups = np.array([r["patient_id"] for r in rows])
    options = {"fp_rates": (1.0, 3.0), "max_fp": AREA_MAX_FP.value, "n_boot": n_boot,
               "seed": seed}
    if scoring.hit_rule == "luna16":
        mine = [n for n in nodes if n["patient_id"] in per_group]
        marks = luna16_marks(
            scores, [[float(r[k]) for k in "xyz"] for r in rows], groups,
            np.array([[float(n[k]) for k in "xyz"] for n in mine]).reshape(-1, 3),
            [_short_axis(n.get("sizes_mm", "")) for n in mine],
            [n["patient_id"] for n in mine], list(per_group), max_marks=scoring.max_marks)
        return marks.bootstrap(**options), {"capped": marks.capped,
                                            "double_hits": marks.double_hits}
    numbering: dict[str, int] = {}
    lesion_ids = np.array([
        numbering.setdefault(f"{r['patient_id']}/{r['node']}", len(numbering))
        if int(r["label"]) and r["node"] != "" else -1 for r in rows])
    return froc_bootstrap(scores, groups, lesion_ids, per_group, n_groups=len(per_group),
                          **options), {}


def score_candidates(rows: list[dict[str, Any]], nodes: Sequence[Mapping[str, str]],
                     patients: Iterable[str], *, seed: int, n_boot: int = 1000,
                     scoring: LnScoring | None = None) -> dict[str, Any]:
    """FROC (per patient, over `patients`) and candidate-level ROC of per-candidate scores;
    `nodes`: the dataset's nodes.csv rows (patient_id, node, x, y, z, sizes_mm)."""
    scoring = scoring or LnScoring()
    per_group = nodes_per_patient(nodes, patients)
    froc, counts = _froc(rows, nodes, per_group, scoring, seed, n_boot)
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows], dtype=float)
    roc = delong_auc(labels, scores) if 1 < labels.sum() < len(labels) - 1 else None
    return {
        "hit_rule": scoring.hit_rule,
        "hit_rule_text": scoring.describe(),
        **({"luna16": {"max_marks": scoring.max_marks, **counts}} if counts else {}),
        "froc_max_fp": AREA_MAX_FP.to_dict(),
        "tpr_at_3fp": froc.sensitivity[3.0].to_dict(),
        "tpr_at_1fp": froc.sensitivity[1.0].to_dict(),
        "froc_area": froc.area.to_dict(),
        "froc_luna_average": froc.average_sensitivity.to_dict(),
        "froc_curve": {"fp_per_patient": froc.curve.fp_per_group.tolist(),
                       "sensitivity": froc.curve.sensitivity.tolist()},
        "froc_band": {"fp_per_patient": froc.fp_grid.tolist(),
                      "low": froc.band_low.tolist(), "high": froc.band_high.tolist()},
        "candidate_roc_auc": None if roc is None else {
            "estimate": roc.auc, "low": roc.interval.low, "high": roc.interval.high,
            "method": "DeLong"},
        "patients": len(per_group), "nodes": int(sum(per_group.values())),
        "candidates": len(rows),
    }
