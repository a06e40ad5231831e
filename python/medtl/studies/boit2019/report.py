"""The ChestX-ray14 (binary) report sections: our accuracy and ROC AUC beside the poster's 96%.

Each run is shown on its own row: the study has one split, so runs differ only by seed and
configuration, and pooling their test sets would count each image twice. The class balance
is shown beside, since an accuracy means little without it. Figures: ROC curves of the test
images, the class balance per set, and the training traces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medtl.experiments.report.context import ReportBody, ReportContext
from medtl.experiments.report.figures import plt, roc_figure, save_figure, trace_figure
from medtl.protocols import Configuration
from medtl.studies.boit2019.protocol import augmentation

ROLES = ("train", "val", "test")


def chest_report(ctx: ReportContext) -> ReportBody:
    """Accuracy (Wilson interval), ROC AUC and class balance beside the published accuracy."""
    published = {label: values for t in ctx.tables for label, values in t.rows.items()}
    pub_accuracy = next(iter(published.values()), [None])[0]
    m0 = ctx.runs[0].metrics
    lines, rows_json = _results(ctx, pub_accuracy)
    balance = m0["class_balance"]
    lines += _balance_lines(balance)
    curves = {}
    for run in ctx.first_per_configuration():
        rows = run.rows()
        curves[run.label] = (np.array([int(r["label"]) for r in rows]),
                             np.array([float(r["score"]) for r in rows]))
    figures = [roc_figure(curves, ctx.fig_dir / "roc.png",
                          "test images (first run of each configuration)"),
               _balance_figure(balance, ctx.fig_dir / "class_balance.png"),
               trace_figure([(run.label, run) for run in ctx.runs],
                            ctx.fig_dir / "training_traces.png")]
    notes = ["- probabilities: the TEST-phase net (`net/test.prototxt`: a Data layer over the "
             "8-bit test LMDB with the dataset's mean and scale, HDF5Data for the 14-label "
             "task; in order; `medtl.infer`) with the selected snapshot; the labels it read are "
             "checked against `test_index.csv`"]
    notes += [_training_data(cfg) for cfg in ctx.experiment.configurations]
    return ReportBody(lines, {"rows": rows_json, "class_balance": balance}, figures, notes,
                      assumptions=[f"accuracy threshold {m0['threshold']['value']}: "
                                   f"{m0['threshold'].get('assumed', '')}"])


def _training_data(cfg: Configuration) -> str:
    a = augmentation(cfg)
    data = ("Keras-augmented copies (`train_augmented`)" if a.value
            else "plain centre crops (`train`)")
    return f"- {cfg.label}: trains on {data} <- {a.describe()}"


def _results(ctx: ReportContext, pub_accuracy: float | None
             ) -> tuple[list[str], list[dict[str, Any]]]:
    m0 = ctx.runs[0].metrics
    lines = ["## Results beside the paper", "",
             f"Test set: {m0['test_images']} images, {m0['test_positives']} positive "
             f"({100 * m0['test_positives'] / m0['test_images']:.1f}%); a classifier that "
             f"always answers the majority class scores {m0['majority_class_accuracy']:.3f}. "
             f"Accuracy at sigmoid >= {m0['threshold']['value']} with its 95% Wilson interval; "
             "ROC AUC with DeLong's 95% interval.", "",
             "| configuration | seed | test accuracy | ROC AUC | sensitivity | specificity | "
             "majority-class accuracy | published accuracy | difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows_json = []
    for run in ctx.runs:
        m = run.metrics
        diff = (f"{m['accuracy']['estimate'] - pub_accuracy:+.3f}" if pub_accuracy is not None
                else "-")
        lines.append(f"| {run.label} | {run.seed} | {_fmt(m['accuracy'])} | "
                     f"{_fmt(m['roc_auc'])} | {_num(m['sensitivity'])} | "
                     f"{_num(m['specificity'])} | {m['majority_class_accuracy']:.3f} | "
                     f"{f'{pub_accuracy:g}' if pub_accuracy is not None else '-'} | {diff} |")
        rows_json.append({"configuration": run.label, "seed": run.seed,
                          **{k: m[k] for k in ("accuracy", "roc_auc", "sensitivity",
                                               "specificity", "majority_class_accuracy")},
                          "published_accuracy": pub_accuracy})
    for t in ctx.tables:
        lines += ["", f"Published: {t.source}: {t.description}"] + [f"- {n}" for n in t.notes]
    lines += ["- the poster states neither the test set nor its class balance, so its 96% "
              "cannot be set against a majority-class baseline"]
    return lines, rows_json


def _balance_lines(balance: dict[str, Any]) -> list[str]:
    lines = ["", "## Class balance", "", "| set | images | patients | positive | negative | "
             "positive share |", "|---|---|---|---|---|---|"]
    for role in sorted(balance, key=ROLES.index):
        e = balance[role]
        b = e.get("binary", {})
        lines.append(f"| {role} | {e['images']} | {e['patients']} | {b.get('positive', '-')} "
                     f"| {b.get('negative', '-')} | {b.get('positive_share', '-')} |")
    return lines


def _fmt(interval: dict[str, Any] | None) -> str:
    if not interval:
        return "-"
    return f"{interval['estimate']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _balance_figure(balance: dict[str, Any], path: Path) -> Path:
    """Positive and negative images per set (binary task)."""
    pyplot = plt()
    roles = sorted(balance, key=ROLES.index)
    pos = [balance[r].get("binary", {}).get("positive", 0) for r in roles]
    neg = [balance[r].get("binary", {}).get("negative", 0) for r in roles]
    fig, ax = pyplot.subplots(figsize=(5, 3.5))
    ax.bar(roles, neg, label="negative (no finding)")
    ax.bar(roles, pos, bottom=neg, label="positive (a finding)")
    ax.set(ylabel="images", title="binary class balance per set")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
