"""The lymph-node study's score: FROC per patient (Shin Table II: sensitivity at 3 false
positives per patient) and candidate-level ROC, from per-candidate scores."""

from __future__ import annotations

from typing import Any

import numpy as np

from medtl.metrics import delong_auc, froc_bootstrap
from medtl.metrics.froc import AREA_MAX_FP

HIT_RULE = ("a candidate hits the node it is linked to (TCIA MED_ABD_LYMPH_CANDIDATES "
            "grtIDs; phantoms: the node it was placed on); each node counts once, at its "
            "best-scoring hit; other hits on it are neither TP nor FP")


def score_candidates(rows: list[dict[str, Any]], nodes_per_patient: dict[str, int], *,
                     seed: int, n_boot: int = 1000) -> dict[str, Any]:
    """FROC (per patient) and candidate-level ROC of per-candidate scores."""
    scores = np.array([float(r["score"]) for r in rows], dtype=float)
    groups = np.array([r["patient_id"] for r in rows])
    numbering: dict[str, int] = {}
    lesion_ids = np.array([
        numbering.setdefault(f"{r['patient_id']}/{r['node']}", len(numbering))
        if int(r["label"]) and r["node"] != "" else -1 for r in rows])
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
