"""The ILD classification study report: our scores beside Shin 2016 Tables I, III-VI and VIII.

Per configuration the test predictions of every fold (and seed) are pooled, ensembles (e.g.
Table III's Avg-All) average their members' class probabilities per test sample, and the
accuracy is set beside the table the study's protocol matches:

    prior set in dataset.options -> Table VIII (GoogLeNet-TL, equal | biased prior; compared
                                    on balanced accuracy, as Shin evaluates on balanced sets)
    split cv5                    -> Table III      split loo -> Table VI
    split slice_random           -> Table IV's Slice-Random row (F-scores only)

Per-class F1 go beside Table IV (Patch-CV5, Slice-CV5 or Slice-Random), the confusion matrix
beside Table V (GoogLeNet-TL, patch level, CV5), the annotated slices per class in each
outer fold beside Table I (compared for CV5), with training traces (Fig. 11),
first-layer filters (Fig. 12), activation maps of a few test images (Fig. 13) and the
training time and memory beside Table VII. The published tables come schema-checked from
the report context (`ReportContext.tables`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl.experiments.report.activations import activation_figures
from medtl.experiments.report.context import FinishedRun, ReportBody, ReportContext
from medtl.experiments.report.figures import confusion_figure, filter_figure, trace_figure
from medtl.experiments.report.published import Table
from medtl.experiments.report.resources import resource_section
from medtl.studies.shin2016.ild.scores import INTERVAL_BOOT, score_classification
from medtl.studies.shin2016.ild.split import VALIDATION_RULE

F1_ROWS = {("patch", "cv5"): "Patch-CV5", ("slice", "cv5"): "Slice-CV5",
           ("slice", "slice_random"): "Slice-Random"}
TABLE_V_MODEL = "googlenet-h_tl"
SPLIT_NAMES = {"cv5": "five-fold patient-disjoint CV", "loo": "leave one patient out",
               "slice_random": "slices dealt into folds at random (Slice-Random)"}
TABLE_VIII_NOTE = (
    "Table VIII compares the priors 'on the balanced validation sets' (Shin Sec. IV-D): its "
    "numbers are set beside the balanced accuracy (mean per-class recall).")
TABLE_I_ROWS = 10  # at most this many folds are listed one by one beside Table I
SLICE_RANDOM_NOTE = ("Table IV gives only F-scores for Slice-Random (below); no accuracy is "
                     "published for it.")

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class IldStudy:
    """What the report needs of the study's adapter."""

    level: str                     # slice | patch
    split: str                     # cv5 | loo | slice_random
    class_names: list[str]
    prior: str | None              # set by the spec (a study of the prior: Table VIII)
    record: dict[str, Any]         # split.json: outer folds and validation units
    folds_file: str                # the outer folds.csv, as shown


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


def _missing(name: str) -> str:
    return f"the published numbers have no {name}"


def _accuracy(tables: dict[str, Table], level: str, split: str, prior: str | None
              ) -> tuple[dict[str, Any], str, str, list[str]]:
    """(label -> accuracy, the metric compared, its source, notes)."""
    if prior is not None:
        t = tables.get("table_viii")
        if t is None:
            return {}, "balanced_accuracy", "", [_missing("table_viii")]
        row = "ILD-Slice" if level == "slice" else "ILD-Patch"
        value = t.rows[row][t.metrics.index(f"{prior}_prior")]
        return ({"GoogLeNet-TL": value}, "balanced_accuracy",
                f"{t.source} ({row}, {prior} prior, GoogLeNet-TL)",
                [TABLE_VIII_NOTE, *t.notes])
    if split not in ("cv5", "loo"):
        return {}, "accuracy", "", [SLICE_RANDOM_NOTE]
    name = "table_iii" if split == "cv5" else "table_vi"
    t = tables.get(name)
    if t is None:
        return {}, "accuracy", "", [_missing(name)]
    source = (f"{t.source} ({'Slice' if level == 'slice' else 'Patch'}-"
              f"{'CV5' if split == 'cv5' else 'LOO'})")
    return {label: values[0] for label, values in t.rows.items()}, "accuracy", source, []


def published_references(tables: list[Table], level: str, split: str, prior: str | None
                         ) -> References:
    """The tables (those of the study, from published.yaml) that match its protocol;
    `prior` only when the spec sets it (a study of the prior: Table VIII)."""
    if not tables:
        return References(notes=["no published-numbers file named by the spec"])
    named = {t.name: t for t in tables}
    accuracy, metric, source, notes = _accuracy(named, level, split, prior)
    f1_row = F1_ROWS.get((level, split))
    t4 = named.get("table_iv")
    f1 = t4.rows[f1_row] if t4 and f1_row else None
    model = "GoogLeNet-TL, Sec. IV-B" if f1_row == "Patch-CV5" else "model not stated"
    if t4 is None:
        f1_source = _missing("table_iv")
    elif f1_row:
        f1_source = f"{t4.source} ({f1_row}; {model})"
    else:
        f1_source = f"{t4.source} has no row for {level} level, {split}"
    t5 = named.get("table_v")
    like = level == "patch" and split == "cv5"
    confusion = [t5.rows[c] for c in t5.classes] if t5 else None
    confusion_source = (f"{t5.source} (GoogLeNet-TL, patch level, CV5"
                        + ("" if like else "; another protocol than this study's") + ")"
                        if t5 else _missing("table_v"))
    return References(accuracy, metric, source, f1, f1_source, confusion, confusion_source,
                      notes)


# ------------------------------------------------------------------ pooling

def _pooled(runs: list[FinishedRun]) -> Rows:
    """Every test record of the runs, with the fold and seed of its run."""
    rows = []
    for run in runs:
        for row in run.rows():
            rows.append({**row, "fold": run.fold, "seed": run.seed})
    return rows


def ensemble(members: list[Rows], class_names: list[str]) -> Rows:
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


def classification_report(ctx: ReportContext, study: IldStudy) -> ReportBody:
    """The results beside the paper, figures, notes and the folds left out."""
    by_config = ctx.by_configuration()
    names = study.class_names
    labels = dict(ctx.labels)
    pooled = {cid: _pooled(runs) for cid, runs in by_config.items()}
    for name, members in ctx.experiment.spec.ensembles.items():
        if all(m in pooled for m in members):
            pooled[name] = ensemble([pooled[m] for m in members], names)
            labels[name] = name
    scores = {cid: score_classification(rows, names, study.level)
              for cid, rows in pooled.items()}
    refs = published_references(ctx.tables, study.level, study.split, study.prior)
    runs = {cid: len(r) for cid, r in by_config.items()}
    folds = sorted({run.fold for run in ctx.runs})
    patients = {r["patient_id"] for rows in pooled.values() for r in rows}
    chosen = TABLE_V_MODEL if TABLE_V_MODEL in scores else next(iter(scores))

    k = study.record["k"]
    lines = [*_accuracy_lines(study, scores, labels, runs, refs, folds, k, len(patients)),
             *_f1_lines(names, scores, labels, refs),
             *_confusion_lines(names, scores[chosen], labels[chosen], refs),
             *table_i_lines(study.record, ctx.table("table_i"), names)]
    figures = [_confusion(scores, labels, refs, ctx.fig_dir / "confusion.png"),
               trace_figure([(labels[cid], run) for cid, r in by_config.items() for run in r],
                            ctx.fig_dir / "training_traces.png",
                            panels=("loss", "val_accuracy"), title="every fold")]
    figures += [p for cid, r in by_config.items()
                if (p := filter_figure(labels[cid], r[0], ctx.fig_dir)) is not None]
    maps, map_notes = activation_figures(ctx, names, count=len(names))  # Fig. 13
    figures += maps
    timing, resources = resource_section(ctx, "table_vii")          # Table VII
    lines += timing
    deviations = []
    if len(folds) < k:
        deviations.append(f"folds: {len(folds)} of the split's {k} folds run; the scores "
                          "pool only those folds' test patients")
    summary = {"scores": scores, "labels": labels, "published": {
        "accuracy": refs.accuracy, "accuracy_metric": refs.accuracy_metric,
        "accuracy_source": refs.accuracy_source, "f1": refs.f1, "f1_source": refs.f1_source,
        "confusion": refs.confusion, "confusion_source": refs.confusion_source},
        "resources": resources}
    return ReportBody(lines, summary, figures,
                      [*_notes(study, scores[chosen], folds), *map_notes], deviations)


def _accuracy_lines(study: IldStudy, scores: dict[str, dict[str, Any]],
                    labels: dict[str, str], runs: dict[str, int], refs: References,
                    folds: list[int], k: int, patients: int) -> list[str]:
    any_label = study.level == "slice"
    compared = refs.accuracy_metric.replace("_", " ")
    lines = ["## Results beside the paper", "",
             f"ILD {study.level} classification, {SPLIT_NAMES[study.split]}; six classes "
             f"({', '.join(study.class_names)}). Pooled over the test records of fold(s) "
             f"{', '.join(map(str, folds))} of {k} ({patients} patients). Accuracy with a 95% "
             "bootstrap interval over patients; balanced accuracy = mean per-class recall.", "",
             "| configuration | runs | accuracy [95% CI] | balanced accuracy | macro F1 "
             + ("| accuracy, any label " if any_label else "")
             + f"| published ({refs.accuracy_source or 'none'}) | difference ({compared}) |",
             "|---|---|---|---|---|" + ("---|" if any_label else "") + "---|---|"]
    for cid, s in scores.items():
        pub = refs.accuracy.get(labels[cid])
        diff = f"{s[refs.accuracy_metric] - pub:+.3f}" if pub is not None else "-"
        lines.append(f"| {labels[cid]} | {runs.get(cid) or 'ensemble'} | {_interval(s)} | "
                     f"{s['balanced_accuracy']:.3f} | {s['macro_f1']:.3f} | "
                     + (f"{s['accuracy_any_label']:.3f} | " if any_label else "")
                     + f"{'-' if pub is None else f'{pub:.3f}'} | {diff} |")
    if refs.notes:
        lines += ["", *[f"Note: {n}" for n in refs.notes]]
    return lines


def _f1_lines(names: list[str], scores: dict[str, dict[str, Any]], labels: dict[str, str],
              refs: References) -> list[str]:
    lines = ["", "### Per-class F1 (beside Table IV)", "",
             f"| configuration | {' | '.join(names)} | macro F1 |",
             "|---|" + "---|" * (len(names) + 1)]
    for cid, s in scores.items():
        f1 = [s["per_class"][n]["f1"] for n in names]
        lines.append(f"| {labels[cid]} | {' | '.join(f'{v:.2f}' for v in f1)} | "
                     f"{s['macro_f1']:.3f} |")
    if refs.f1 is not None:
        lines.append(f"| published: {refs.f1_source} | "
                     f"{' | '.join(f'{v:.2f}' for v in refs.f1)} | {np.mean(refs.f1):.3f} |")
    else:
        lines += ["", f"No published F-scores to compare: {refs.f1_source}."]
    return lines


def _confusion_lines(names: list[str], score: dict[str, Any], label: str, refs: References
                     ) -> list[str]:
    matrix = score["confusion"]["row_normalised"]
    lines = ["", f"### Confusion matrix of {label} (beside Table V)", "",
             "Rows: truth, columns: predicted; fractions of each true class, ours (published: "
             f"{refs.confusion_source}).", "",
             f"| truth \\ predicted | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for i, n in enumerate(names):
        pub = refs.confusion[i] if refs.confusion else [None] * len(names)
        lines.append(f"| {n} | " + " | ".join(f"{_cell(v)} ({_cell(p)})"
                                               for v, p in zip(matrix[i], pub, strict=True))
                     + " |")
    return lines


def _notes(study: IldStudy, score: dict[str, Any], folds: list[int]) -> list[str]:
    record = study.record
    held_out = {f: v["validation"] for f, v in record["folds"].items() if int(f) in folds}
    return [f"- test records: {score['scoring']['assumed']}",
            f"- accuracy interval: 95% percentile bootstrap over patients, "
            f"{INTERVAL_BOOT.value} replicates (assumed: {INTERVAL_BOOT.assumed})",
            f"- outer folds: `{study.folds_file}` ({record['k']} folds of {record['unit']} "
            "units)",
            f"- validation sets: {VALIDATION_RULE.value}: {VALIDATION_RULE.assumed}. "
            "Validation units per fold: "
            + "; ".join(f"fold {f}: {', '.join(v)}" for f, v in held_out.items())]


def _confusion(scores: dict[str, dict[str, Any]], labels: dict[str, str], refs: References,
               path: Path) -> Path:
    """Row-normalised confusion matrices per configuration, and Shin's Table V."""
    panels = [(labels[cid], s["confusion"]["row_normalised"], s["confusion"]["classes"])
              for cid, s in scores.items()]
    if refs.confusion is not None:
        table = refs.confusion_source.split(" (", 1)[0]
        panels.append((f"published: {table}\n(GoogLeNet-TL, patch, CV5)", refs.confusion,
                       panels[0][2]))
    return confusion_figure(panels, path, decision="predicted class: the highest of the six "
                                                   "class probabilities (no threshold)")


def _signed(value: float) -> str:
    return f"{round(value, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def table_i_lines(record: dict[str, Any], table: Table | None, class_names: list[str]
                  ) -> list[str]:
    """Annotated slices per class in each outer fold of the split (split.json), beside
    Shin's Table I (their mean over five patient-disjoint folds); the difference for CV5."""
    lines = ["", "### Annotated slices per fold (beside Table I)", ""]
    counts = record.get("slices_per_class")
    if counts is None:
        return [*lines, "Slices per fold not recorded: this split.json was drawn by an "
                        "earlier kit (delete the dataset folder to draw the split again)."]
    k, split = record["k"], record["split"]
    per_fold = np.array([counts[str(f)] for f in range(1, k + 1)], dtype=float)
    mean = per_fold.mean(axis=0)
    lines += [f"Slices carrying each class among the test units of each of the {k} folds "
              f"({SPLIT_NAMES.get(split, split)}); a slice counts once for each class it "
              "carries.", "", f"| fold | {' | '.join(class_names)} | total |",
              "|---|" + "---|" * (len(class_names) + 1)]
    if k <= TABLE_I_ROWS:
        lines += [f"| fold {f} | {' | '.join(str(int(v)) for v in row)} | {int(row.sum())} |"
                  for f, row in enumerate(per_fold, start=1)]
    lines.append(f"| mean per fold | {' | '.join(f'{v:.1f}' for v in mean)} | "
                 f"{mean.sum():.1f} |")
    if table is None:
        return [*lines, "", "No published Table I to compare (the published numbers have no "
                            "table_i)."]
    values = next(iter(table.rows.values()))
    published = [values[table.metrics.index(n)] if n in table.metrics else None
                 for n in class_names]
    shown_values = " | ".join("-" if v is None else f"{v:.1f}" for v in published)
    total = sum(v for v in published if v is not None)
    lines.append(f"| published: {table.source} | {shown_values} | {total:.1f} |")
    if split == "cv5" and k == 5:
        diffs = " | ".join("-" if p is None else _signed(m - p)
                           for m, p in zip(mean, published, strict=True))
        lines.append(f"| difference | {diffs} | {_signed(mean.sum() - total)} |")
    else:
        lines += ["", "Table I averages five patient-disjoint folds; this split's folds are "
                      "shown for reference, not compared."]
    return lines
