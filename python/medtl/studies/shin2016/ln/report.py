"""The lymph-node (FROC) study's report sections: our numbers beside Shin 2016 Table II.

The predictions of every fold are pooled per configuration (cross-validation as the paper
reports it), ensembles average their members' probabilities per candidate (Shin's
"Combined"), FROC per patient with bootstrap intervals; figures: FROC curves (Fig. 8),
training traces (Fig. 11), first-layer filters (Fig. 12) and confusion matrices, activation
maps of a few test images (Fig. 13); training time and memory beside Table VII.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medtl.experiments.report.activations import activation_figures
from medtl.experiments.report.context import FinishedRun, ReportBody, ReportContext
from medtl.experiments.report.figures import (
    FrocSeries,
    confusion_figure,
    filter_figure,
    froc_figure,
    trace_figure,
)
from medtl.experiments.report.published import Table
from medtl.experiments.report.resources import resource_section
from medtl.metrics import confusion_matrix, row_normalised
from medtl.protocols import configurations
from medtl.studies.shin2016.ln.scoring import LnScoring, score_candidates

Rows = list[dict[str, Any]]


def _pooled(runs: list[FinishedRun]) -> Rows:
    rows = []
    for run in runs:
        for row in run.rows():
            rows.append({**row, "score": float(row["score"]), "label": int(row["label"])})
    return rows


def _ensemble(members: list[Rows]) -> Rows:
    """Mean score per candidate over members that all scored it (Shin's 'Combined')."""
    by_cand = [{r["candidate_id"]: r for r in rows} for rows in members]
    common = set.intersection(*(set(m) for m in by_cand))
    out = []
    for cid in sorted(common):
        row = dict(by_cand[0][cid])
        row["score"] = float(np.mean([m[cid]["score"] for m in by_cand]))
        out.append(row)
    return out


def _fmt(interval: dict[str, Any] | None) -> str:
    if not interval:
        return "-"
    return f"{interval['estimate']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def froc_report(ctx: ReportContext, nodes: list[dict[str, str]],
                scoring: LnScoring | None = None) -> ReportBody:
    """Table II beside our pooled FROC numbers, with figures; `nodes`: the dataset's
    annotated nodes (nodes.csv rows); `scoring`: the hit rule and its options."""
    by_config = ctx.by_configuration()
    labels = dict(ctx.labels)
    pooled = {cid: _pooled(runs) for cid, runs in by_config.items()}
    for name, members in ctx.experiment.spec.ensembles.items():
        if all(m in pooled for m in members):
            pooled[name] = _ensemble([pooled[m] for m in members])
            labels[name] = name
    patients = {r["patient_id"] for rows in pooled.values() for r in rows}
    scores = {cid: score_candidates(rows, nodes, patients, seed=0, scoring=scoring)
              for cid, rows in pooled.items()}
    first = next(iter(scores.values()))
    table = ctx.table("table_ii")
    published = table.rows if table else {}
    metrics = table.metrics if table else []

    ours = {c.label for c in configurations(ctx.experiment.spec.paper)} | set(labels.values())
    figures = [_froc_figure(scores, labels, table, ours, ctx.fig_dir / "froc.png"),
               trace_figure([(labels[cid], run) for cid, runs in by_config.items()
                             for run in runs], ctx.fig_dir / "training_traces.png",
                            panels=("loss", "val_accuracy"), title="every fold")]
    figures += [p for cid, runs in by_config.items()
                if (p := filter_figure(labels[cid], runs[0], ctx.fig_dir)) is not None]
    figures.append(_confusion(pooled, labels, ctx.fig_dir / "confusion.png"))
    maps, map_notes = activation_figures(ctx, ["false", "node"])     # Fig. 13
    figures += maps

    lines = ["## Results beside the paper", "",
             f"Pooled over the folds' test patients ({len(patients)} patients, "
             f"{first['nodes']} nodes). FROC: sensitivity against false positives per "
             "patient; 95% bootstrap intervals over patients.", "",
             f"Hit rule: {first['hit_rule_text']}.", "",
             "| configuration | runs | TPR at 3 FP | FROC area (0-8 FP, /8) | candidate ROC AUC "
             f"| published ({', '.join(metrics) or 'none'}) | TPR difference |",
             "|---|---|---|---|---|---|---|"]
    for cid, s in scores.items():
        pub = published.get(labels[cid])
        diff = (f"{s['tpr_at_3fp']['estimate'] - pub[1]:+.3f}" if pub and len(pub) > 1
                else "-")
        lines.append(f"| {labels[cid]} | {len(by_config.get(cid, [])) or 'ensemble'} | "
                     f"{_fmt(s['tpr_at_3fp'])} | {_fmt(s['froc_area'])} | "
                     f"{_fmt(s['candidate_roc_auc'])} | "
                     f"{', '.join(f'{v:.2f}' for v in pub) if pub else '-'} | {diff} |")
    if table:
        lines += ["", f"Published values: {table.source}. The paper calls its first number the "
                  "area under the FROC curve without stating the FP range or normalisation, so "
                  "it is shown beside, not compared with, the kit's normalised area."]
        lines += [f"- {n}" for n in table.notes]
    timing, resources = resource_section(ctx, "table_vii")
    lines += timing
    notes = [*map_notes,
             "- FROC area: the curve over [0, {value:g}] FP per patient, divided by {value:g} "
             "(assumed: {assumed})".format(**first["froc_max_fp"])]
    return ReportBody(lines, {"scores": scores, "published": published, "labels": labels,
                              "resources": resources}, figures, notes)


def _froc_figure(scores: dict[str, dict[str, Any]], labels: dict[str, str],
                 table: Table | None, ours: set[str], path: Path) -> Path:
    """FROC curves per configuration with their bootstrap bands and Table II's TPR at 3 FP
    (Shin Fig. 8); published rows of other methods (`ours`: the paper's own configuration
    labels) are drawn as points on their own."""
    column = table.metrics.index("tpr_at_3fp") if table and "tpr_at_3fp" in table.metrics \
        else None
    published = table.rows if table and column is not None else {}
    series = [FrocSeries(labels[cid], s["froc_curve"]["fp_per_patient"],
                         s["froc_curve"]["sensitivity"],
                         (s["froc_band"]["fp_per_patient"], s["froc_band"]["low"],
                          s["froc_band"]["high"]),
                         [(3.0, float(published[labels[cid]][column]))]
                         if labels[cid] in published else [])
              for cid, s in scores.items()]
    drawn = {x.name for x in series}
    others = [(name, 3.0, float(values[column])) for name, values in published.items()
              if name not in drawn and name not in ours]
    rule = next(iter(scores.values()))["hit_rule"]
    return froc_figure(series, path, unit="patient", max_fp=8.0, marks=(3.0,),
                       published_source=table.source if table else "",
                       title=f"FROC, pooled folds (hit rule: {rule})", others=others)


def _confusion(pooled: dict[str, Rows], labels: dict[str, str], path: Path) -> Path:
    """Row-normalised confusion matrices per configuration at probability 0.5."""
    panels = []
    for cid, rows in pooled.items():
        truth = [r["label"] for r in rows]
        pred = [int(r["score"] >= 0.5) for r in rows]
        matrix = row_normalised(confusion_matrix(truth, pred, labels=[0, 1]))
        panels.append((labels[cid], matrix.tolist(), ["false", "node"]))
    return confusion_figure(panels, path, decision="predicted node when the mean view "
                                                   "probability >= 0.5 (threshold 0.5)")
