"""The lymph-node (FROC) study's report sections: our numbers beside Shin 2016 Table II.

The predictions of every fold are pooled per configuration (cross-validation as the paper
reports it), ensembles average their members' probabilities per candidate (Shin's
"Combined"), FROC per patient with bootstrap intervals; figures: FROC curves (Fig. 8),
training traces (Fig. 11), first-layer filters (Fig. 12) and confusion matrices.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medtl.experiments.report.context import FinishedRun, ReportBody, ReportContext
from medtl.experiments.report.figures import (
    confusion_figure,
    filter_figure,
    plt,
    save_figure,
    trace_figure,
)
from medtl.metrics import confusion_matrix, row_normalised
from medtl.studies.shin2016.ln.scoring import score_candidates

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


def froc_report(ctx: ReportContext, nodes_of: Callable[[set[str]], dict[str, int]]
                ) -> ReportBody:
    """Table II beside our pooled FROC numbers, with figures; `nodes_of` gives the
    annotated nodes of each patient."""
    by_config = ctx.by_configuration()
    labels = dict(ctx.labels)
    pooled = {cid: _pooled(runs) for cid, runs in by_config.items()}
    for name, members in ctx.experiment.spec.ensembles.items():
        if all(m in pooled for m in members):
            pooled[name] = _ensemble([pooled[m] for m in members])
            labels[name] = name
    patients = {r["patient_id"] for rows in pooled.values() for r in rows}
    nodes = nodes_of(patients)
    scores = {cid: score_candidates(rows, nodes, seed=0) for cid, rows in pooled.items()}
    table = ctx.table("table_ii")
    published = table.rows if table else {}
    metrics = table.metrics if table else []

    figures = [_froc_figure(scores, labels, ctx.fig_dir / "froc.png"),
               trace_figure([(labels[cid], runs[0]) for cid, runs in by_config.items()],
                            ctx.fig_dir / "training_traces.png",
                            panels=("loss", "val_accuracy"), title="first fold")]
    figures += [p for cid, runs in by_config.items()
                if (p := filter_figure(labels[cid], runs[0], ctx.fig_dir)) is not None]
    figures.append(_confusion(pooled, labels, ctx.fig_dir / "confusion.png"))

    lines = ["## Results beside the paper", "",
             f"Pooled over the folds' test patients ({len(patients)} patients, "
             f"{sum(nodes.values())} nodes). FROC: sensitivity against false positives per "
             "patient; 95% bootstrap intervals over patients.", "",
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
    first = next(iter(scores.values()))
    notes = [f"- hit rule: {first['hit_rule']}",
             "- FROC area: the curve over [0, {value:g}] FP per patient, divided by {value:g} "
             "(assumed: {assumed})".format(**first["froc_max_fp"])]
    return ReportBody(lines, {"scores": scores, "published": published, "labels": labels},
                      figures, notes)


def _froc_figure(scores: dict[str, dict[str, Any]], labels: dict[str, str], path: Path) -> Path:
    """FROC curves per configuration (Shin Fig. 8)."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 4.5))
    for cid, s in scores.items():
        ax.step(s["froc_curve"]["fp_per_patient"], s["froc_curve"]["sensitivity"],
                where="post", label=labels[cid])
    ax.axvline(3, color="grey", lw=0.8, ls=":")
    ax.set(xlim=(0, 8), ylim=(0, 1.02), xlabel="false positives per patient",
           ylabel="sensitivity", title="FROC (pooled folds)")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def _confusion(pooled: dict[str, Rows], labels: dict[str, str], path: Path) -> Path:
    """Row-normalised confusion matrices per configuration at probability 0.5."""
    panels = []
    for cid, rows in pooled.items():
        truth = [r["label"] for r in rows]
        pred = [int(r["score"] >= 0.5) for r in rows]
        matrix = row_normalised(confusion_matrix(truth, pred, labels=[0, 1]))
        panels.append((labels[cid], matrix.tolist(), ["false", "node"]))
    return confusion_figure(panels, path, note="threshold 0.5 on the mean view probability")
