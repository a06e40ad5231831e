"""The report sections of Tajbakhsh 2016's studies: tables, curves with bands, box plots.

From the finished runs of a spec: one table row per configuration, training-data size and
seed (the paper has one training / test split, so nothing is pooled); FROC curves with 95%
bands (polyp, PE: Figs. 2, 4), ROC curves with bands (frames: Fig. 6), box plots of the
boundary errors with mean and standard deviation above each box (intima-media: Fig. 9) and
one traced test ROI (Fig. 8); the validation AUC per epoch (Fig. 10); which curves differ at
each operating point (non-overlapping 95% intervals, the paper's rule, Tables S1-S3). The
core report (`medtl.experiments.report.build`) adds the deviations and assumptions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medtl.datasets.formats.images import ImageError, read_gray
from medtl.datasets.splits import SINGLE
from medtl.experiments.report.context import FinishedRun, ReportBody, ReportContext
from medtl.experiments.report.figures import plt, save_figure, trace_figure
from medtl.experiments.report.published import Table
from medtl.metrics import BOOTSTRAP_METHOD
from medtl.studies.tajbakhsh2016.apps.imt import read_test_rois
from medtl.studies.tajbakhsh2016.dense import INTERFACES

FIGURE = {"polyp": "Fig. 2", "pe": "Fig. 4", "frames": "Fig. 6", "imt": "Figs. 8-9"}
# Table II holds the learning rates the configurations already carry, not results
PROTOCOL_TABLES = ("table_ii",)


class Study(Protocol):
    """What the report reads of a Tajbakhsh adapter."""

    application: str

    @property
    def scoring(self) -> Any: ...

    @property
    def dataset_dir(self) -> Path: ...

    def training_set(self, fraction: float) -> str: ...


@dataclass(frozen=True)
class Entry:
    """A finished run with its training-data size ("100%", "50%", "one group")."""

    run: FinishedRun
    data: str
    seeded: bool                   # the spec has several seeds: name them

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def metrics(self) -> dict[str, Any]:
        return self.run.metrics

    @property
    def name(self) -> str:
        seed = f", seed {self.run.seed}" if self.seeded else ""
        return f"{self.label} ({self.data}{seed})"


def _entries(ctx: ReportContext, study: Study) -> list[Entry]:
    seeded = len(ctx.experiment.spec.seeds) > 1
    return [Entry(r, "one group" if study.training_set(r.fraction) == SINGLE
                  else f"{r.fraction * 100:g}%", seeded) for r in ctx.runs]


def _fmt(interval: dict[str, Any] | None, digits: int = 3) -> str:
    if not interval:
        return "-"
    return (f"{interval['estimate']:.{digits}f} [{interval['low']:.{digits}f}, "
            f"{interval['high']:.{digits}f}]")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


# ------------------------------------------------------------------ operating points

def operating_points(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> interval of every value the paper compares curves (or boxes) at."""
    app = metrics.get("application")
    if app in ("polyp", "pe"):
        unit = metrics["fp_unit"]
        return {f"sensitivity at {k} FP/{unit}": v for k, v in metrics["sensitivity"].items()}
    if app == "frames":
        out = {f"sensitivity at {float(k):.0%} FPR": v
               for k, v in metrics["sensitivity_at_fpr"].items()}
        out["AUC (bootstrap)"] = metrics["auc_bootstrap"]
        return out
    if app == "imt":
        return {f"{name} mean error": metrics[name]["mean"] for name in (*INTERFACES,)}
    return {}


def _differs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["low"] > b["high"] or b["low"] > a["high"]


def comparisons(runs: list[Entry]) -> list[str]:
    """Pairs of runs whose 95% intervals do not overlap at an operating point, within one
    training-data size (configurations) and within one configuration (data sizes)."""
    lines = []
    pairs = [(a, b) for a, b in itertools.combinations(runs, 2)
             if a.run.seed == b.run.seed
             and (a.run.fraction == b.run.fraction or a.run.config_id == b.run.config_id)]
    for a, b in pairs:
        pa, pb = operating_points(a.metrics), operating_points(b.metrics)
        differ = [f"{k} ({pa[k]['estimate']:.3f} vs {pb[k]['estimate']:.3f})"
                  for k in pa if k in pb and _differs(pa[k], pb[k])]
        same = [k for k in pa if k in pb and not _differs(pa[k], pb[k])]
        verdict = ("differ at " + "; ".join(differ)) if differ else "no difference"
        lines.append(f"- {a.name} vs {b.name}: {verdict}"
                     + (f" (overlapping at {len(same)} point(s))" if differ and same else ""))
    return lines or ["- a single run: nothing to compare"]


# ------------------------------------------------------------------ tables

def _detection_table(runs: list[Entry]) -> tuple[list[str], list[list[str]]]:
    first = runs[0].metrics
    rates = list(first["sensitivity"])
    unit = first["fp_unit"]
    head = ["configuration", "training data",
            *[f"sensitivity at {r} FP/{unit}" for r in rates],
            f"FROC area (0-{first['max_fp']:g} FP/{unit}, normalised)",
            "candidate ROC AUC (DeLong)", "selected epoch"]
    body = [[r.label, r.data, *[_fmt(r.metrics["sensitivity"].get(k)) for k in rates],
             _fmt(r.metrics["froc_area"]), _fmt(r.metrics["candidate_roc_auc"]),
             str(r.metrics.get("selected_epoch", "-"))] for r in runs]
    return head, body


def _frames_table(runs: list[Entry]) -> tuple[list[str], list[list[str]]]:
    fprs = list(runs[0].metrics["sensitivity_at_fpr"])
    head = ["configuration", "training data", "AUC (DeLong)", "AUC (bootstrap)",
            *[f"sensitivity at {float(f):.0%} FPR" for f in fprs], "selected epoch"]
    body = [[r.label, r.data, _fmt(r.metrics["auc_delong"]), _fmt(r.metrics["auc_bootstrap"]),
             *[_fmt(r.metrics["sensitivity_at_fpr"].get(f)) for f in fprs],
             str(r.metrics.get("selected_epoch", "-"))] for r in runs]
    return head, body


def _imt_table(runs: list[Entry]) -> tuple[list[str], list[list[str]]]:
    units = runs[0].metrics["units"]
    head = ["configuration", "training data",
            *[f"{n} error, mean [95% CI] ({units})" for n in INTERFACES],
            *[f"{n} sd / median [Q1, Q3]" for n in INTERFACES],
            "thickness error, mean [95% CI]", "column-max error (LI / MA)", "selected epoch"]
    body = []
    for r in runs:
        m = r.metrics
        body.append([r.label, r.data, *[_fmt(m[n]["mean"], 2) for n in INTERFACES],
                     *[f"{m[n]['std']:.2f} / {m[n]['median']:.2f} [{m[n]['q1']:.2f}, "
                       f"{m[n]['q3']:.2f}]" for n in INTERFACES],
                     _fmt(m["thickness"]["mean"], 2),
                     " / ".join(f"{m[n]['column_max_mean']:.2f}" for n in INTERFACES),
                     str(m.get("selected_epoch", "-"))])
    return head, body


def _table(app: str, runs: list[Entry]) -> list[str]:
    tables = {"polyp": _detection_table, "pe": _detection_table, "frames": _frames_table,
              "imt": _imt_table}
    head, body = tables[app](runs)
    if runs[0].seeded:
        head.insert(2, "seed")
        for row, r in zip(body, runs, strict=True):
            row.insert(2, str(r.run.seed))
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(row) + " |" for row in body]]


def _results(tables: list[Table]) -> list[Table]:
    """The published tables of this study's results (rows given, not the protocol)."""
    return [t for t in tables if t.name not in PROTOCOL_TABLES and t.rows]


def _published(tables: list[Table], app: str) -> list[str]:
    """The published result values for this study, where published.yaml has any."""
    results = _results(tables)
    if not results:
        return ["", "Published values: the paper gives no numbers for this study in its "
                f"text; read them from its {FIGURE[app]}."]
    lines = []
    for t in results:
        lines += ["", f"Published ({t.source} ({', '.join(t.metrics)})):", ""]
        lines += [f"- {label}: {values}" for label, values in t.rows.items()]
        lines += [f"- {note}" for note in t.notes]
    return lines


# ------------------------------------------------------------------ figures

def _by_data(runs: list[Entry]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for r in runs:
        out.setdefault(r.data, []).append(r)
    return out


def _curve_figure(app: str, runs: list[Entry], colours: dict[str, str], title: str,
                  path: Path, styles: dict[str, str] | None = None) -> Path:
    """ROC (frames) or FROC (polyp, PE) curves, each with its 95% bootstrap band."""
    fig, ax = plt().subplots(figsize=(6.2, 4.6))
    for r in runs:
        m = r.metrics
        style = {"ls": (styles or {}).get(r.data, "-"), "color": colours[r.run.config_id]}
        if app == "frames":
            ax.plot(m["roc_curve"]["fpr"], m["roc_curve"]["tpr"], label=r.name, **style)
            band = m["roc_band"]
            ax.fill_between(band["fpr"], band["low"], band["high"], alpha=0.12,
                            color=style["color"], lw=0)
        else:
            # straight between operating points: the interpolation the table reads them by
            ax.plot(m["froc_curve"]["fp"], m["froc_curve"]["sensitivity"], label=r.name,
                    **style)
            band = m["froc_band"]
            ax.fill_between(band["fp"], band["low"], band["high"], alpha=0.12,
                            color=style["color"], lw=0)
    if app == "frames":
        for f in runs[0].metrics["sensitivity_at_fpr"]:
            ax.axvline(float(f), color="grey", lw=0.7, ls=":")
        ax.plot([0, 1], [0, 1], color="lightgrey", lw=0.7)
        ax.set(xlim=(0, 1), xlabel="false positive rate", ylabel="sensitivity")
    else:
        m = runs[0].metrics
        for f in m["sensitivity"]:
            ax.axvline(float(f), color="grey", lw=0.7, ls=":")
        ax.set(xlim=(0, m["max_fp"]), xlabel=f"false positives per {m['fp_unit']}",
               ylabel="sensitivity")
    ax.set(ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def _box_figure(runs: list[Entry], title: str, path: Path) -> Path:
    """Boundary errors per interface: Tukey box plots, mean and sd above each box (Fig. 9)."""
    fig, axes = plt().subplots(1, 2, figsize=(max(6.0, 1.6 * len(runs) + 2), 4.4))
    for ax, name in zip(axes, INTERFACES, strict=True):
        values = [r.metrics[name]["per_roi"] for r in runs]
        ax.boxplot(values, whis=1.5)
        top = max(max(v) for v in values)
        for k, r in enumerate(runs, start=1):
            m = r.metrics[name]
            ax.text(k, top * 1.08 + 1e-9, f"{m['mean']['estimate']:.2f}\n±{m['std']:.2f}",
                    ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(1, len(runs) + 1))
        ax.set_xticklabels([r.label for r in runs], rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, top * 1.3 + 1e-9)
        ax.set(title=name, ylabel=f"error ({runs[0].metrics['units']})")
    fig.suptitle(f"boundary error per test ROI, {title} (mean ± sd above each box)",
                 fontsize=9)
    return save_figure(fig, path)


def _roi_image(study: Study, stem: str) -> np.ndarray | None:
    """The test ROI a map file belongs to, cut from its image (None when unreadable)."""
    roi = next((r for r in read_test_rois(study.dataset_dir) if f"roi_{r.roi:05d}" == stem),
               None)
    if roi is None:
        return None
    x0, y0, x1, y1 = roi.box
    try:
        return read_gray(roi.image)[y0:y1, x0:x1]
    except ImageError:
        return None


def _example_figure(run: Entry, study: Study, path: Path) -> Path | None:
    """One test ROI (Fig. 8): the image, the two confidence maps merged (green lumen-intima,
    red media-adventitia; each stretched from its minimum to its maximum), the per-column
    maxima, and the snakes beside the expert's traces (dashed)."""
    maps = sorted((run.run.run_dir / "maps").glob("roi_*.npz"))
    if not maps:
        return None
    z = np.load(maps[0])
    li, ma = z["lumen_intima_map"], z["media_adventitia_map"]
    scaled = [(np.nan_to_num(m) - np.nanmin(m)) / (np.nanmax(m) - np.nanmin(m) or 1.0)
              for m in (ma, li)]
    rgb = np.clip(np.stack([*scaled, np.zeros_like(li)], -1), 0, 1)
    image = _roi_image(study, maps[0].stem)
    fig, axes = plt().subplots(1, 4, figsize=(13, 3.4), sharey=True)
    cols = np.arange(li.shape[1])
    panels = (("test ROI", image, ("expert",)), ("confidence maps (stretched)", rgb, ()),
              ("per-column maxima", rgb, ("column_max",)),
              ("snakes (solid), expert (dashed)", rgb, ("snake", "expert")))
    for ax, (title, shown, keys) in zip(axes, panels, strict=True):
        if shown is not None:
            ax.imshow(shown, cmap="gray", interpolation="nearest", aspect="auto")
        for key in keys:
            for name, colour in (("lumen_intima", "lime"), ("media_adventitia", "red")):
                ax.plot(cols, z[f"{name}_{key}"], color=colour, lw=1.2,
                        ls="--" if key == "expert" else "-")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{run.name}: {maps[0].stem}", fontsize=9)
    return save_figure(fig, path)


def _figures(app: str, runs: list[Entry], ctx: ReportContext, study: Study) -> list[Path]:
    fig_dir = ctx.fig_dir
    colours = {cid: f"C{k % 10}" for k, cid in enumerate(ctx.labels)}  # one per configuration
    figures = []
    groups = _by_data(runs)
    kind = "roc" if app == "frames" else "froc"
    for data, members in groups.items():
        stem = _slug(f"{kind if app != 'imt' else 'boxplots'}_{data}")
        title = f"training data {data}"
        if app == "imt":
            figures.append(_box_figure(members, title, fig_dir / f"{stem}.png"))
        else:
            figures.append(_curve_figure(app, members, colours, title,
                                         fig_dir / f"{stem}.png"))
    if app != "imt" and len(groups) > 1:
        styles = dict(zip(groups, itertools.cycle(["-", "--", ":", "-."]), strict=False))
        figures.append(_curve_figure(app, runs, colours, "reduced training data",
                                     fig_dir / f"{kind}_reductions.png", styles))
    if app == "imt":
        example = _example_figure(runs[0], study, fig_dir / "imt_example.png")
        if example is not None:
            figures.append(example)
    figures.append(trace_figure([(r.name, r.run) for r in runs],
                                fig_dir / "validation_auc.png", panels=("val_auc",),
                                title="validation AUC per epoch (Fig. 10)"))
    return figures


# ------------------------------------------------------------------ the report

def _notes(app: str, runs: list[Entry], study: Study) -> list[str]:
    """How every number is computed."""
    m = runs[0].metrics
    unit = {"polyp": f"{m.get('fp_unit')}s", "pe": "volumes",
            "frames": f"{m.get('bootstrap_unit')}s", "imt": "subjects"}[app]
    lines = [f"- intervals: 95%, percentile bootstrap resampling {unit} (assumed: "
             f"{BOOTSTRAP_METHOD.assumed}); {study.scoring.n_boot} replicates, seed "
             f"{study.scoring.bootstrap_seed}",
             "- two curves differ at an operating point when their 95% intervals do not "
             "overlap (Tajbakhsh 2016 Sec. VI, introduction)"]
    if app != "imt":
        lines.append("- test scores: a candidate's (frame's) score is the mean probability "
                     "over its test patches (crops) (Tajbakhsh 2016 Sec. VI-A to VI-C)")
    if app in ("polyp", "pe"):
        lines += [f"- false positives per {m['fp_unit']}; sensitivity between operating "
                  f"points: {m['interpolation']} interpolation"]
    if app == "frames":
        lines += [f"- bootstrap unit: {m['bootstrap_unit']}; AUC also with DeLong's "
                  "interval; sensitivity at the paper's 10%, 15%, 20% FPR (Sec. VI-C)"]
    if app == "imt":
        lines += ["- the net is applied at every test-ROI pixel; per column the row of "
                  "maximum response in each confidence map; an open snake per interface "
                  "smooths that step boundary (Sec. VI-D, Fig. 8; the snake: "
                  "`medtl.studies.tajbakhsh2016.boundaries`)",
                  "- error of an interface: mean |snake row - expert row| over the columns "
                  "the expert traced; thickness error: |mean snake thickness - mean expert "
                  "thickness|; box whiskers by the Tukey method (1.5 IQR, Fig. 9); mean "
                  "intervals by bootstrap over subjects",
                  f"- errors in {m['units']}",
                  "- intima-media runs: `predictions.csv` holds the per-column boundaries "
                  "(expert, column maxima, snake), `maps/roi_NNNNN.npz` the confidence maps"]
    return lines


def _hit_rule(app: str, runs: list[Entry]) -> list[str]:
    """The FROC's hit rule, stated in the body of a detection report."""
    if app not in ("polyp", "pe"):
        return []
    return [f"FROC hit rule: {runs[0].metrics['hit_rule']}.", ""]


def tajbakhsh_report(ctx: ReportContext, study: Study) -> ReportBody:
    """The results of one Tajbakhsh 2016 study: its table, the published values, the
    statistical comparisons and the figures."""
    app = study.application
    runs = _entries(ctx, study)
    figures = _figures(app, runs, ctx, study)
    lines = ["## Results", "",
             f"One training / test split (the paper's); {len(runs)} finished run(s). The "
             f"paper reports these results as curves and box plots ({FIGURE[app]}); compare "
             "the figures below with them.", "", *_hit_rule(app, runs),
             *_table(app, runs), *_published(ctx.tables, app),
             "", "## Statistical comparisons (95% intervals that do not overlap)", "",
             *comparisons(runs)]
    summary = {"runs": {r.run.run_id: {"label": r.label, "data": r.data,
                                       "operating_points": operating_points(r.metrics)}
                        for r in runs},
               "published": {t.name: t.rows for t in _results(ctx.tables)}}
    return ReportBody(lines, summary, figures, _notes(app, runs, study))
