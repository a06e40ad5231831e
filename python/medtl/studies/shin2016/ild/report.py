"""The ILD classification study report: our scores beside Shin 2016 Tables III-VI and VIII.

Per configuration the test predictions of every fold (and seed) are pooled, ensembles (e.g.
Table III's Avg-All) average their members' class probabilities per test sample, and the
accuracy is set beside the table the study's protocol matches:

    prior set in dataset.options -> Table VIII (GoogLeNet-TL, equal | biased prior; compared
                                    on balanced accuracy, as Shin evaluates on balanced sets)
    split cv5                    -> Table III      split loo -> Table VI
    split slice_random           -> Table IV's Slice-Random row (F-scores only)

Per-class F1 go beside Table IV (Patch-CV5, Slice-CV5 or Slice-Random), the confusion matrix
beside Table V (GoogLeNet-TL, patch level, CV5), with training traces (Fig. 11) and
first-layer filters (Fig. 12).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
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
from medtl.studies.shin2016.ild.adapter import OUTER_SPLIT, VALIDATION_RULE, ShinIldAdapter
from medtl.studies.shin2016.ild.scores import INTERVAL_BOOT, score_classification

F1_ROWS = {("patch", "cv5"): "Patch-CV5", ("slice", "cv5"): "Slice-CV5",
           ("slice", "slice_random"): "Slice-Random"}
TABLE_V_MODEL = "googlenet-h_tl"
SPLIT_NAMES = {"cv5": "five-fold patient-disjoint CV", "loo": "leave one patient out",
               "slice_random": "slices dealt into folds at random (Slice-Random)"}


@dataclass(frozen=True)
class References:
    """The published numbers a study is compared with, and where each comes from."""

    accuracy: dict[str, float] = field(default_factory=dict)   # configuration label -> value
    accuracy_metric: str = "accuracy"                          # or "balanced_accuracy"
    accuracy_source: str = ""
    f1: list[float] | None = None                              # NM EM GG FB MN CD
    f1_source: str = ""
    confusion: list[list[float]] | None = None
    confusion_source: str = ""
    notes: list[str] = field(default_factory=list)


def published_references(published: dict[str, Any] | None, study: str, level: str,
                         split: str, prior: str | None) -> References:
    """The tables of `published` (published.yaml) that match the study's protocol; `prior`
    only when the spec sets it (a study of the prior: Table VIII)."""
    if not published:
        return References(notes=["no published-numbers file named by the spec"])
    tables = published["tables"]
    notes: list[str] = []
    accuracy: dict[str, float] = {}
    metric, source = "accuracy", ""
    if prior is not None:
        t = tables["table_viii"]
        row = "ILD-Slice" if level == "slice" else "ILD-Patch"
        column = t["metrics"].index(f"{prior}_prior")
        accuracy = {"GoogLeNet-TL": t["rows"][row][column]}
        metric = "balanced_accuracy"
        source = f"{t['source']} ({row}, {prior} prior, GoogLeNet-TL)"
        notes.append("Table VIII compares the priors 'on the balanced validation sets' (Shin "
                     "Sec. IV-D): its numbers are set beside the balanced accuracy (mean "
                     "per-class recall). Its equal-prior slice value (0.902) equals Table VI's "
                     "LOO GoogLeNet-TL slice accuracy; the paper does not name the split.")
    elif split in ("cv5", "loo"):
        t = tables["table_iii" if split == "cv5" else "table_vi"]
        accuracy = {label: values[study][0] for label, values in t["rows"].items()
                    if isinstance(values, dict) and study in values}
        source = f"{t['source']} ({'Slice' if level == 'slice' else 'Patch'}-"
        source += "CV5)" if split == "cv5" else "LOO)"
    else:
        notes.append("Table IV gives only F-scores for Slice-Random (below); no accuracy "
                     "is published for it.")
    f1_row = F1_ROWS.get((level, split))
    t4 = tables["table_iv"]
    f1 = t4["rows"][f1_row] if f1_row else None
    model = "GoogLeNet-TL, Sec. IV-B" if f1_row == "Patch-CV5" else "model not stated"
    f1_source = (f"{t4['source']} ({f1_row}; {model})" if f1_row
                 else f"{t4['source']} has no row for {level} level, {split}")
    t5 = tables["table_v"]
    like = level == "patch" and split == "cv5"
    confusion_source = (f"{t5['source']} (GoogLeNet-TL, patch level, CV5"
                        + ("" if like else "; another protocol than this study's") + ")")
    return References(accuracy, metric, source, f1, f1_source,
                      [t5["rows"][c] for c in t5["classes"]], confusion_source, notes)


def references_for(experiment: Experiment, adapter: ShinIldAdapter) -> References:
    published = None
    if experiment.spec.published:
        published = yaml.safe_load(
            (experiment.path.parent / experiment.spec.published).read_text())
    prior = adapter.config.prior if "prior" in experiment.dataset.options else None
    return published_references(published, experiment.spec.study, adapter.level,
                                adapter.config.split, prior)


# ------------------------------------------------------------------ pooling

def _predictions(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Every test record of the runs, with the fold and seed of its run."""
    rows = []
    for run_dir in sorted(run_dirs):
        run = json.loads((run_dir / "run.json").read_text())
        with open(run_dir / "predictions.csv", newline="") as f:
            for row in csv.DictReader(f):
                row["fold"], row["seed"] = run["fold"], run["seed"]
                rows.append(row)
    return rows


def ensemble(members: list[list[dict[str, Any]]], class_names: list[str]
             ) -> list[dict[str, Any]]:
    """Mean class probabilities per test record (and seed) over members that all predicted
    it; the ensemble predicts their argmax (Shin's 'Avg-All', Table III)."""
    by_key = [{(str(r["seed"]), r["sample_id"]): r for r in rows} for rows in members]
    common = set.intersection(*(set(m) for m in by_key))
    out = []
    for key in sorted(common):
        row = dict(by_key[0][key])
        p = np.mean([[float(m[key][f"p_{n}"]) for n in class_names] for m in by_key], axis=0)
        row.update({f"p_{n}": float(v) for n, v in zip(class_names, p, strict=True)})
        row["predicted"] = int(np.argmax(p))
        row["predicted_name"] = class_names[row["predicted"]]
        out.append(row)
    return out


# ------------------------------------------------------------------ the report

def _interval(s: dict[str, Any]) -> str:
    i = s["accuracy_interval"]
    return f"{s['accuracy']:.3f} [{i['low']:.3f}, {i['high']:.3f}]"


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def build_classification_report(experiment: Experiment, adapter: ShinIldAdapter) -> Path:
    """Write REPORT.md, report.json and the figures of an ILD classification study."""
    out_dir = experiment.results_dir
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    finished = finished_runs(experiment)
    names = adapter.class_names
    labels = {c.id: c.label or c.id for c in experiment.configurations}
    pooled = {cid: _predictions(dirs) for cid, dirs in finished.items()}
    for name, members in experiment.spec.ensembles.items():
        if all(m in pooled for m in members):
            pooled[name] = ensemble([pooled[m] for m in members], names)
            labels[name] = name
    scores = {cid: score_classification(rows, names, adapter.level)
              for cid, rows in pooled.items()}
    refs = references_for(experiment, adapter)
    split = adapter.split()

    figures = [_confusion_figure(scores, labels, refs, fig_dir / "confusion.png"),
               trace_figure(finished, labels, fig_dir / "training_traces.png")]
    figures += [p for cid, dirs in finished.items()
                if (p := filter_figure(cid, sorted(dirs)[0], fig_dir)) is not None]

    patients = {r["patient_id"] for rows in pooled.values() for r in rows}
    folds = sorted({int(r["fold"]) for rows in pooled.values() for r in rows})
    any_label = adapter.level == "slice"
    compared = refs.accuracy_metric.replace("_", " ")
    lines = [*header_lines(experiment), "", "## Results beside the paper", "",
             f"ILD {adapter.level} classification, {SPLIT_NAMES[adapter.config.split]}; six "
             f"classes ({', '.join(names)}). Pooled over the test records of fold(s) "
             f"{', '.join(map(str, folds))} of {split['k']} ({len(patients)} patients). "
             "Accuracy with a 95% bootstrap interval over patients; balanced accuracy = mean "
             "per-class recall.", "",
             "| configuration | runs | accuracy [95% CI] | balanced accuracy | macro F1 "
             + ("| accuracy, any label " if any_label else "")
             + f"| published ({refs.accuracy_source or 'none'}) | difference ({compared}) |",
             "|---|---|---|---|---|" + ("---|" if any_label else "") + "---|---|"]
    for cid, s in scores.items():
        pub = refs.accuracy.get(labels[cid])
        diff = f"{s[refs.accuracy_metric] - pub:+.3f}" if pub is not None else "-"
        lines.append(f"| {labels[cid]} | {len(finished.get(cid, [])) or 'ensemble'} | "
                     f"{_interval(s)} | {s['balanced_accuracy']:.3f} | {s['macro_f1']:.3f} | "
                     + (f"{s['accuracy_any_label']:.3f} | " if any_label else "")
                     + f"{'-' if pub is None else f'{pub:.3f}'} | {diff} |")
    if refs.notes:
        lines += ["", *[f"Note: {n}" for n in refs.notes]]
    lines += ["", "### Per-class F1 (beside Table IV)", "",
              f"| configuration | {' | '.join(names)} | macro F1 |",
              "|---|" + "---|" * (len(names) + 1)]
    for cid, s in scores.items():
        f1 = [s["per_class"][n]["f1"] for n in names]
        lines.append(f"| {labels[cid]} | {' | '.join(f'{v:.2f}' for v in f1)} | "
                     f"{s['macro_f1']:.3f} |")
    if refs.f1 is not None:
        lines.append(f"| published: {refs.f1_source} | "
                     f"{' | '.join(f'{v:.2f}' for v in refs.f1)} | "
                     f"{np.mean(refs.f1):.3f} |")
    else:
        lines += ["", f"No published F-scores to compare: {refs.f1_source}."]
    chosen = TABLE_V_MODEL if TABLE_V_MODEL in scores else next(iter(scores))
    matrix = scores[chosen]["confusion"]["row_normalised"]
    lines += ["", f"### Confusion matrix of {labels[chosen]} (beside Table V)", "",
              "Rows: truth, columns: predicted; fractions of each true class, ours (published: "
              f"{refs.confusion_source}).", "",
              f"| truth \\ predicted | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for i, n in enumerate(names):
        pub = refs.confusion[i] if refs.confusion else [None] * len(names)
        lines.append(f"| {n} | " + " | ".join(f"{_cell(v)} ({_cell(p)})"
                                               for v, p in zip(matrix[i], pub, strict=True))
                     + " |")
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures]
    held_out = {f: v["validation"] for f, v in split["folds"].items() if int(f) in folds}
    lines += ["", "## Where every number comes from", "",
              f"- test records: {scores[chosen]['scoring']['assumed']}",
              f"- accuracy interval: 95% percentile bootstrap over patients, "
              f"{INTERVAL_BOOT.value} replicates (assumed: {INTERVAL_BOOT.assumed})",
              f"- outer folds: `{adapter.dataset_dir.relative_to(out_dir)}/folds.csv` "
              f"({split['k']} folds of {split['unit']} units)",
              f"- validation sets: {VALIDATION_RULE.value}: {VALIDATION_RULE.assumed}. "
              "Validation units per fold: "
              + "; ".join(f"fold {f}: {', '.join(v)}" for f, v in held_out.items()),
              "- each run's `run.json` holds its resolved settings with their provenance, "
              "`metrics.json` its own fold's scores, `predictions.csv` its per-record class "
              "probabilities, `manifest.json` the hashes of data and weights."]
    deviations = []
    if len(folds) < split["k"]:
        deviations.append(f"folds: {len(folds)} of the split's {split['k']} folds run; the "
                          "scores pool only those folds' test patients")
    assumptions = [f"dataset `{k}` = {v.get('value')!r}: {v.get('assumed', 'set by the spec')}"
                   for k, v in sorted(split["options"].items())
                   if "assumed" in v or v.get("set_by_user")]
    if adapter.config.split == "cv5" and adapter.config.folds_csv is None:
        assumptions.append(f"outer folds: {OUTER_SPLIT.value}: {OUTER_SPLIT.assumed}")
    lines += provenance_lines(experiment, adapter.dataset_manifests(), deviations, assumptions)
    return write_report(out_dir, lines, {
        "scores": scores, "labels": labels,
        "published": {"accuracy": refs.accuracy, "accuracy_metric": refs.accuracy_metric,
                      "accuracy_source": refs.accuracy_source, "f1": refs.f1,
                      "f1_source": refs.f1_source, "confusion": refs.confusion,
                      "confusion_source": refs.confusion_source}})


def _confusion_figure(scores: dict[str, dict[str, Any]], labels: dict[str, str],
                      refs: References, path: Path) -> Path:
    """Row-normalised confusion matrices per configuration, and Shin's Table V."""
    pyplot = plt()
    panels = [(labels[cid], s["confusion"]["row_normalised"], s["confusion"]["classes"])
              for cid, s in scores.items()]
    names = panels[0][2]
    if refs.confusion is not None:
        panels.append(("published: Shin 2016 Table V\n(GoogLeNet-TL, patch, CV5)",
                       refs.confusion, names))
    fig, axes = pyplot.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4),
                                squeeze=False)
    for ax, (title, matrix, classes) in zip(axes[0], panels, strict=True):
        m = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 else "black")
        ticks = list(range(len(classes)))
        ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
               xlabel="predicted", ylabel="truth", title=title)
        ax.title.set_fontsize(7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)
    return path
