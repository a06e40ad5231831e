"""The kidney study's report sections: our numbers beside Ravishankar 2016 Tables 1 and 2.

Each run is shown on its own row: the study has one split, so runs differ only by seed and
configuration, and pooling their test sets would count each patch twice. Figures: the share
of filters fine-tuning changed per layer (Table 2), ROC curves of the test patches, the Dice
of every test image's detected box, and the training traces.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medtl.experiments.report.context import FinishedRun, ReportBody, ReportContext
from medtl.experiments.report.figures import plt, roc_figure, save_figure, trace_figure
from medtl.experiments.report.published import Table
from medtl.studies.ravishankar2016.evaluation import DETECTION_RULE

Entry = tuple[str, FinishedRun, str]   # (row label, run, feature set)


def kidney_report(ctx: ReportContext) -> ReportBody:
    """Table 1 (accuracy, localisation failures) and Table 2 (filters changed) beside the
    published values, with figures."""
    runs = ctx.runs
    blob = runs[0].metrics["feature_blob"]
    table_1 = next((t for t in ctx.tables if "localisation_failures" in t.metrics), None)
    lines, rows_json = _table_1(ctx, blob, table_1)
    changes = {run.label: run.metrics["changed_filters"]
               for run in ctx.first_per_configuration() if run.metrics.get("changed_filters")}
    lines += _table_2(ctx, changes)
    figures = []
    if changes:
        figures.append(_filter_figure(changes, ctx.fig_dir / "filter_changes.png"))
    figures += [roc_figure(_curves(ctx, blob), ctx.fig_dir / "roc.png",
                           "test patches (first run of each configuration)"),
                _dice_figure(ctx, ctx.fig_dir / "localisation_dice.png"),
                trace_figure([(run.label, run) for run in ctx.runs],
                             ctx.fig_dir / "training_traces.png")]
    return ReportBody(lines, {"rows": rows_json, "changed_filters": changes}, figures,
                      _notes(runs[0].metrics, blob),
                      assumptions=[f"localisation scoring: {DETECTION_RULE}"])


def _table_1(ctx: ReportContext, blob: str, table: Table | None
             ) -> tuple[list[str], list[dict[str, Any]]]:
    pub_rows = {_key(label): values for label, values in (table.rows if table else {}).items()}
    m0 = ctx.runs[0].metrics
    lines = ["## Results beside the paper (Table 1)", "",
             f"A gradient boosting machine per feature set, fitted on the training patches; "
             f"accuracy on the {m0['test_patches']} test patches ({m0['test_positives']} "
             f"kidney); localisation on the {m0['test_images']} test images (a failure: the "
             "detected box's Dice with the ground truth is below 0.80).", "",
             "| configuration | features | seed | test accuracy | ROC AUC (DeLong 95%) | "
             "localisation failures / images | median Dice | published (accuracy, failures) |",
             "|---|---|---|---|---|---|---|---|"]
    rows_json = []
    for label, run, name in _entries(ctx.runs, blob):
        s = run.metrics["feature_sets"][name]
        pub = pub_rows.get(_key(name.replace(blob, "fc7")))
        lines.append(
            f"| {label} | {_feature_name(name, blob)} | {run.seed} | "
            f"{s['test_accuracy']:.3f} | {_fmt(s['test_roc_auc'])} | "
            f"{s['localisation_failures']} / {s['localisation_images']} | "
            f"{s['median_dice']:.3f} | {_pub(pub)} |")
        rows_json.append({"configuration": label, "features": name, "seed": run.seed,
                          **{k: s[k] for k in ("test_accuracy", "val_accuracy",
                                               "test_roc_auc", "localisation_failures",
                                               "localisation_images", "median_dice")},
                          "published": pub})
    if table:
        lines += ["", f"Published: {table.source}: {table.description}"]
        lines += [f"- {n}" for n in table.notes]
        lines += ["- the published fc7 + Haar values are shown beside every configuration's "
                  "fused features: the review does not say which CaffeNet variant they come "
                  "from"]
    return lines, rows_json


def _entries(runs: list[FinishedRun], blob: str) -> list[Entry]:
    """The CNN rows of every run, then one Haar row per seed: the Haar GBM does not depend
    on the CNN."""
    fused = f"{blob}+haar"
    haar_runs = {run.seed: run for run in reversed(runs)
                 if "haar" in run.metrics["feature_sets"]}
    entries = [(run.label, run, name) for run in runs for name in (blob, fused)
               if name in run.metrics["feature_sets"]]
    return entries + [("Haar (no CNN)", run, "haar") for _, run in sorted(haar_runs.items())]


def _table_2(ctx: ReportContext, changes: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["", "## Filters changed by fine-tuning (Table 2)", ""]
    if not changes:
        return [*lines, "- no run started from transferred weights"]
    first = next(iter(changes.values()))
    lines += [f"Filters whose weights moved by more than "
              f"{100 * first['threshold']['value']:.0f}% ({first['measure']}; threshold: "
              f"{first['threshold']['source']}). First run of each configuration.", "",
              "| layer | filters | " + " | ".join(changes) + " |",
              "|---|---|" + "---|" * len(changes)]
    for layer, entry in first["layers"].items():
        lines.append(f"| {layer} | {entry['total']} | " + " | ".join(
            str(c["layers"][layer]["changed"]) for c in changes.values()) + " |")
    lines.append("")
    for cfg in ctx.experiment.configurations:
        if cfg.policy.first_learning.value == "none" and (cfg.label or cfg.id) in changes:
            lines.append(f"- {cfg.label or cfg.id}: no layer learns "
                         f"({cfg.policy.first_learning.describe()}), so its counts are "
                         "zero by construction")
    table_2 = ctx.table("table_2")
    if table_2:
        lines += [f"- published: {table_2.source}"] + [f"- {n}" for n in table_2.notes]
    return lines


def _notes(m0: dict[str, Any], blob: str) -> list[str]:
    """Where the numbers come from, beyond what every report says."""
    ev = m0["evaluation"]
    return [f"- features: blob `{blob}` of the selected snapshot "
            f"({ev['feature_blob'].get('source') or ev['feature_blob'].get('assumed', '')}), "
            "extracted with Caffe's TEST-phase preprocessing (mean image, centre crop; "
            "`medtl.infer`); Haar features from the dataset (`haar/<set>.h5`)",
            "- classifier: scikit-learn GradientBoostingClassifier, seeded with the run's "
            "seed; " + ", ".join(f"{k} = {v['value']!r}" for k, v in ev.items()
                                 if k.startswith("gbm_")),
            f"- localisation: {DETECTION_RULE}; sliding boxes "
            f"{ev['window_scales']['value']} x the training kidneys' mean box, step "
            f"{ev['window_stride']['value']} of the box",
            "- each run's `predictions.csv` holds the GBM probability of every test patch per "
            "feature set, `localisation.csv` the detected box of every test image, "
            "`features/` the CNN features of every patch"]


def _feature_name(name: str, blob: str) -> str:
    return {blob: blob, "haar": "Haar", f"{blob}+haar": f"{blob} + Haar"}.get(name, name)


def _key(label: str) -> str:
    return label.replace(" ", "").lower()


def _pub(values: list[Any] | None) -> str:
    if not values:
        return "-"
    return ", ".join("-" if v is None else f"{v:g}" for v in values)


def _fmt(interval: dict[str, Any] | None) -> str:
    if not interval:
        return "-"
    return f"{interval['estimate']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def _curves(ctx: ReportContext, blob: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(labels, scores) of the test patches per configuration and feature set (Haar once)."""
    out = {}
    for run in ctx.first_per_configuration():
        rows = run.rows()
        labels = np.array([int(r["label"]) for r in rows])
        for name in run.metrics["feature_sets"]:
            if name == "haar" and "Haar" in out:
                continue
            label = "Haar" if name == "haar" else f"{run.label} {_feature_name(name, blob)}"
            out[label] = (labels, np.array([float(r[f"score_{name}"]) for r in rows]))
    return out


def _filter_figure(changes: dict[str, dict[str, Any]], path: Path) -> Path:
    """Share of each layer's filters changed by more than the threshold (Table 2)."""
    pyplot = plt()
    layers = list(next(iter(changes.values()))["layers"])
    x = np.arange(len(layers))
    width = 0.8 / len(changes)
    fig, ax = pyplot.subplots(figsize=(7, 4))
    for i, (label, c) in enumerate(changes.items()):
        share = [c["layers"][k]["changed"] / c["layers"][k]["total"] for k in layers]
        ax.bar(x + (i - (len(changes) - 1) / 2) * width, share, width, label=label)
    threshold = next(iter(changes.values()))["threshold"]["value"]
    ax.set(xticks=x, xticklabels=layers, ylim=(0, 1.02), ylabel="share of filters changed",
           title=f"filters changed by more than {100 * threshold:.0f}% (relative L2)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _dice_figure(ctx: ReportContext, path: Path) -> Path:
    """Dice of each test image's detected box, per configuration and feature set."""
    pyplot = plt()
    groups: dict[str, list[float]] = defaultdict(list)
    first_config = ctx.runs[0].config_id
    for run in ctx.first_per_configuration():
        for r in run.rows("localisation.csv"):
            # Haar boxes do not depend on the CNN: shown once
            name = "Haar" if r["feature_set"] == "haar" else f"{run.label}\n{r['feature_set']}"
            if name == "Haar" and run.config_id != first_config:
                continue
            groups[name].append(float(r["dice"]))
    fig, ax = pyplot.subplots(figsize=(max(5.0, 0.9 * len(groups)), 4))
    for i, values in enumerate(groups.values()):
        ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values,
                   s=12)
    ax.axhline(0.8, color="red", lw=0.8, ls="--", label="Dice 0.80 (failure below)")
    ax.set(xticks=range(len(groups)), ylim=(0, 1.02), ylabel="Dice of the detected box",
           title="localisation on the test images (first run of each configuration)")
    ax.set_xticklabels(list(groups), fontsize=6)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
