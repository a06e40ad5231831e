"""The lymph-node (FROC) study report: our numbers beside Shin 2016 Table II, with figures.

The predictions of every fold are pooled per configuration (cross-validation as the paper
reports it), ensembles average their members' probabilities per candidate, FROC per patient
with bootstrap intervals, and the FROC, training-trace, filter and confusion figures.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtl.experiments.report_common import (
    filter_figure,
    finished_runs,
    header_lines,
    plt,
    provenance_lines,
    trace_figure,
    write_report,
)
from medtl.experiments.spec import Experiment
from medtl.studies.shin2016.ln.adapter import ShinLnAdapter, score_candidates


def _predictions(run_dirs: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for run_dir in run_dirs:
        with open(run_dir / "predictions.csv", newline="") as f:
            for row in csv.DictReader(f):
                row["score"] = float(row["score"])
                row["label"] = int(row["label"])
                rows.append(row)
    return rows


def _ensemble(members: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Mean score per candidate over members that all scored it (Shin's 'Combined')."""
    by_cand = [{r["candidate_id"]: r for r in rows} for rows in members]
    common = set.intersection(*(set(m) for m in by_cand))
    out = []
    for cid in sorted(common):
        row = dict(by_cand[0][cid])
        row["score"] = float(np.mean([m[cid]["score"] for m in by_cand]))
        out.append(row)
    return out


def _published(experiment: Experiment) -> tuple[dict[str, list[float]], list[str], str]:
    """Label -> published values for this study, metric names, source."""
    if not experiment.spec.published:
        return {}, [], ""
    data = yaml.safe_load((experiment.path.parent / experiment.spec.published).read_text())
    study = experiment.spec.study
    for table in data["tables"].values():
        if study in table.get("studies", []):
            rows = {label: values[study] for label, values in table["rows"].items()
                    if isinstance(values, dict) and study in values}
            return rows, table["metrics"], table["source"]
    return {}, [], ""


def _fmt(interval: dict[str, Any] | None) -> str:
    if not interval:
        return "-"
    return f"{interval['estimate']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def build_froc_report(experiment: Experiment, adapter: ShinLnAdapter) -> Path:
    """Write REPORT.md, report.json and the figures of a lymph-node study."""
    out_dir = experiment.results_dir
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    finished = finished_runs(experiment)
    labels = {c.id: c.label or c.id for c in experiment.configurations}
    pooled: dict[str, list[dict[str, Any]]] = {cid: _predictions(dirs)
                                               for cid, dirs in finished.items()}
    for name, members in experiment.spec.ensembles.items():
        if all(m in pooled for m in members):
            pooled[name] = _ensemble([pooled[m] for m in members])
            labels[name] = name
    patients = {r["patient_id"] for rows in pooled.values() for r in rows}
    nodes = adapter.nodes_of(patients)
    scores = {cid: score_candidates(rows, nodes, seed=0) for cid, rows in pooled.items()}
    published, metrics, source = _published(experiment)

    figures = [_froc_figure(scores, labels, fig_dir / "froc.png"),
               trace_figure(finished, labels, fig_dir / "training_traces.png")]
    figures += [p for cid, dirs in finished.items()
                if (p := filter_figure(cid, sorted(dirs)[0], fig_dir)) is not None]
    figures.append(_confusion_figure(pooled, labels, fig_dir / "confusion.png"))

    lines = [*header_lines(experiment), "",
             "## Results beside the paper", "",
             f"Pooled over the folds' test patients ({len(patients)} patients, "
             f"{sum(nodes.values())} nodes). FROC: sensitivity against false positives per "
             "patient; 95% bootstrap intervals over patients.", "",
             "| configuration | runs | TPR at 3 FP | FROC area (0-8 FP, /8) | candidate ROC AUC "
             f"| published ({', '.join(metrics) or 'none'}) | TPR difference |",
             "|---|---|---|---|---|---|---|"]
    for cid, s in scores.items():
        label = labels[cid]
        pub = published.get(label)
        diff = (f"{s['tpr_at_3fp']['estimate'] - pub[1]:+.3f}" if pub and len(pub) > 1
                else "-")
        lines.append(f"| {label} | {len(finished.get(cid, [])) or 'ensemble'} | "
                     f"{_fmt(s['tpr_at_3fp'])} | {_fmt(s['froc_area'])} | "
                     f"{_fmt(s['candidate_roc_auc'])} | "
                     f"{', '.join(f'{v:.2f}' for v in pub) if pub else '-'} | {diff} |")
    if source:
        lines += ["", f"Published values: {source}. The paper calls its first number the area "
                  "under the FROC curve without stating the FP range or normalisation, so it "
                  "is shown beside, not compared with, the kit's normalised area."]
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures if p is not None]
    lines += ["", "## Where every number comes from", "",
              f"- hit rule: {next(iter(scores.values()))['hit_rule']}",
              "- FROC area: the curve over [0, {value:g}] FP per patient, divided by {value:g} "
              "(assumed: {assumed})".format(**next(iter(scores.values()))["froc_max_fp"]),
              "- each run's `run.json` holds its resolved settings with their provenance, "
              "`metrics.json` its own fold's scores, `predictions.csv` its per-candidate "
              "scores, `manifest.json` the hashes of data and weights."]
    lines += provenance_lines(experiment, [adapter.dataset_dir / "manifest.json"])
    return write_report(out_dir, lines,
                        {"scores": scores, "published": published, "labels": labels})


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)
    return path


def _confusion_figure(pooled: dict[str, list[dict[str, Any]]], labels: dict[str, str],
                      path: Path) -> Path:
    """Row-normalised confusion matrices at probability 0.5 (cf. Shin Table V)."""
    from medtl.metrics import confusion_matrix, row_normalised

    pyplot = plt()
    items = list(pooled.items())
    fig, axes = pyplot.subplots(1, len(items), figsize=(2.6 * len(items), 2.6), squeeze=False)
    for ax, (cid, rows) in zip(axes[0], items, strict=True):
        truth = [r["label"] for r in rows]
        pred = [int(r["score"] >= 0.5) for r in rows]
        m = row_normalised(confusion_matrix(truth, pred, labels=[0, 1]))
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["false", "node"],
               yticklabels=["false", "node"], title=labels[cid])
        ax.title.set_fontsize(7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)
    return path
