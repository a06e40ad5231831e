"""`medtl report` for Tajbakhsh 2016's studies: tables, curves with bands, box plots.

Writes `results/tajbakhsh2016/<study>/REPORT.md`, `report.json` and `figures/*.png` from the
finished runs of a spec: one table row per configuration, training-data size and seed (the
paper has one training / test split, so nothing is pooled); FROC curves with 95% bands
(polyp, PE: Figs. 2, 4), ROC curves with bands (frames: Fig. 6), box plots of the boundary
errors with mean and standard deviation above each box (intima-media: Fig. 9) and one traced
test ROI (Fig. 8); the validation AUC per epoch (Fig. 10); which curves differ at each
operating point (non-overlapping 95% intervals, the paper's rule, Tables S1-S3); every
deviation from the paper and every assumption.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtl.config import ConfigError, protocol_values
from medtl.datasets.splits import SINGLE
from medtl.experiments.report_common import plt as pyplot
from medtl.experiments.report_common import save_figure
from medtl.experiments.spec import FINISHED, Experiment, RunPlan, expand, load_experiment
from medtl.metrics import BOOTSTRAP_METHOD
from medtl.metrics.froc import INTERPOLATION as FROC_INTERPOLATION
from medtl.metrics.roc import INTERPOLATION as ROC_INTERPOLATION
from medtl.studies.tajbakhsh2016.adapters import TAJBAKHSH_ADAPTERS, TajbakhshAdapter
from medtl.studies.tajbakhsh2016.dense import INTERFACES

FIGURE = {"polyp": "Fig. 2", "pe": "Fig. 4", "frames": "Fig. 6", "imt": "Figs. 8-9"}


@dataclass(frozen=True)
class Finished:
    plan: RunPlan
    metrics: dict[str, Any]
    data: str                      # "100%", "50%", "one group"

    @property
    def label(self) -> str:
        return self.plan.config.label or self.plan.config.id

    @property
    def name(self) -> str:
        seed = f", seed {self.plan.seed}" if len(self.plan.experiment.spec.seeds) > 1 else ""
        return f"{self.label} ({self.data}{seed})"


def _data_label(adapter: TajbakhshAdapter, fraction: float) -> str:
    if adapter.training_set(fraction) == SINGLE:
        return "one group"
    return f"{fraction * 100:g}%"


def _finished(experiment: Experiment, adapter: TajbakhshAdapter) -> list[Finished]:
    out = []
    for plan in expand(experiment):
        done = plan.run_dir / FINISHED
        if done.is_file():
            out.append(Finished(plan, json.loads(done.read_text()),
                                _data_label(adapter, plan.fraction)))
    return out


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


def comparisons(runs: list[Finished]) -> list[str]:
    """Pairs of runs whose 95% intervals do not overlap at an operating point, within one
    training-data size (configurations) and within one configuration (data sizes)."""
    lines = []
    pairs = [(a, b) for a, b in itertools.combinations(runs, 2)
             if a.plan.seed == b.plan.seed
             and (a.plan.fraction == b.plan.fraction or a.plan.config.id == b.plan.config.id)]
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

def _table(app: str, runs: list[Finished], adapter: TajbakhshAdapter) -> list[str]:
    if app in ("polyp", "pe"):
        first = runs[0].metrics
        rates = list(first["sensitivity"])
        unit = first["fp_unit"]
        head = ["configuration", "training data", *[f"sensitivity at {r} FP/{unit}"
                                                   for r in rates],
                f"FROC area (0-{first['max_fp']:g} FP/{unit}, normalised)",
                "candidate ROC AUC (DeLong)", "selected epoch"]
        body = [[r.label, r.data, *[_fmt(r.metrics["sensitivity"].get(k)) for k in rates],
                 _fmt(r.metrics["froc_area"]), _fmt(r.metrics["candidate_roc_auc"]),
                 str(r.metrics.get("selected_epoch", "-"))] for r in runs]
    elif app == "frames":
        fprs = list(runs[0].metrics["sensitivity_at_fpr"])
        head = ["configuration", "training data", "AUC (DeLong)", "AUC (bootstrap)",
                *[f"sensitivity at {float(f):.0%} FPR" for f in fprs], "selected epoch"]
        body = [[r.label, r.data, _fmt(r.metrics["auc_delong"]),
                 _fmt(r.metrics["auc_bootstrap"]),
                 *[_fmt(r.metrics["sensitivity_at_fpr"].get(f)) for f in fprs],
                 str(r.metrics.get("selected_epoch", "-"))] for r in runs]
    else:
        units = runs[0].metrics["units"]
        head = ["configuration", "training data",
                *[f"{n} error, mean [95% CI] ({units})" for n in INTERFACES],
                *[f"{n} sd / median [Q1, Q3]" for n in INTERFACES],
                "thickness error, mean [95% CI]", "column-max error (LI / MA)",
                "selected epoch"]
        body = []
        for r in runs:
            m = r.metrics
            body.append([r.label, r.data, *[_fmt(m[n]["mean"], 2) for n in INTERFACES],
                         *[f"{m[n]['std']:.2f} / {m[n]['median']:.2f} [{m[n]['q1']:.2f}, "
                           f"{m[n]['q3']:.2f}]" for n in INTERFACES],
                         _fmt(m["thickness"]["mean"], 2),
                         " / ".join(f"{m[n]['column_max_mean']:.2f}" for n in INTERFACES),
                         str(m.get("selected_epoch", "-"))])
    if len(adapter.experiment.spec.seeds) > 1:
        head.insert(2, "seed")
        for row, r in zip(body, runs, strict=True):
            row.insert(2, str(r.plan.seed))
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(row) + " |" for row in body]]


def _published(experiment: Experiment) -> tuple[dict[str, Any], str]:
    """Label -> the published values for this study, if published.yaml has any."""
    if not experiment.spec.published:
        return {}, ""
    data = yaml.safe_load((experiment.path.parent / experiment.spec.published).read_text())
    study = experiment.spec.study
    for table in (data or {}).get("tables", {}).values():
        rows = {label: values[study] for label, values in (table.get("rows") or {}).items()
                if isinstance(values, dict) and study in values}
        if rows:
            return rows, f"{table['source']} ({', '.join(table.get('metrics', []))})"
    return {}, ""


# ------------------------------------------------------------------ figures

def _by_data(runs: list[Finished]) -> dict[str, list[Finished]]:
    out: dict[str, list[Finished]] = {}
    for r in runs:
        out.setdefault(r.data, []).append(r)
    return out


def _colours(runs: list[Finished]) -> dict[str, str]:
    """One colour per configuration, the same in every figure."""
    ids = list(dict.fromkeys(c.id for c in runs[0].plan.experiment.configurations))
    return {cid: f"C{k % 10}" for k, cid in enumerate(ids)}


def _curve_figure(app: str, runs: list[Finished], title: str, path: Path,
                  styles: dict[str, str] | None = None) -> Path:
    """ROC (frames) or FROC (polyp, PE) curves, each with its 95% bootstrap band."""
    plt = pyplot()
    colours = _colours(runs)
    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    for r in runs:
        m = r.metrics
        style = {"ls": (styles or {}).get(r.data, "-"), "color": colours[r.plan.config.id]}
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


def _box_figure(runs: list[Finished], title: str, path: Path) -> Path:
    """Boundary errors per interface: Tukey box plots, mean and sd above each box (Fig. 9)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(runs) + 2), 4.4))
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


def _example_figure(run: Finished, adapter: TajbakhshAdapter, path: Path) -> Path | None:
    """One test ROI (Fig. 8): the image, the two confidence maps merged (green lumen-intima,
    red media-adventitia; each stretched from its minimum to its maximum), the per-column
    maxima, and the snakes beside the expert's traces (dashed)."""
    from medtl.datasets.formats.images import ImageError, read_gray
    from medtl.studies.tajbakhsh2016.apps.imt import read_test_rois

    maps = sorted((run.plan.run_dir / "maps").glob("roi_*.npz"))
    if not maps:
        return None
    z = np.load(maps[0])
    li, ma = z["lumen_intima_map"], z["media_adventitia_map"]
    scaled = [(np.nan_to_num(m) - np.nanmin(m)) / (np.nanmax(m) - np.nanmin(m) or 1.0)
              for m in (ma, li)]
    rgb = np.clip(np.stack([*scaled, np.zeros_like(li)], -1), 0, 1)
    roi = next((r for r in read_test_rois(adapter.dataset_dir)
                if f"roi_{r.roi:05d}" == maps[0].stem), None)
    try:
        x0, y0, x1, y1 = roi.box if roi else (0, 0, 0, 0)
        image = read_gray(roi.image)[y0:y1, x0:x1] if roi else None
    except ImageError:
        image = None
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharey=True)
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


def _trace_figure(runs: list[Finished], path: Path) -> Path:
    """Validation AUC per epoch (the paper's Fig. 10)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for r in runs:
        trace = r.plan.run_dir / "trace.csv"
        if not trace.is_file():
            continue
        with open(trace, newline="") as f:
            rows = list(csv.DictReader(f))
        ax.plot([int(x["epoch"]) for x in rows], [float(x["val_auc"]) for x in rows],
                marker="o", ms=3, label=r.name)
    ax.set(xlabel="epoch", ylabel="validation AUC", title="validation AUC (Fig. 10)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _figures(app: str, runs: list[Finished], adapter: TajbakhshAdapter, fig_dir: Path
             ) -> list[Path]:
    figures = []
    groups = _by_data(runs)
    kind = "roc" if app == "frames" else "froc"
    for data, members in groups.items():
        stem = _slug(f"{kind if app != 'imt' else 'boxplots'}_{data}")
        title = f"training data {data}"
        if app == "imt":
            figures.append(_box_figure(members, title, fig_dir / f"{stem}.png"))
        else:
            figures.append(_curve_figure(app, members, title, fig_dir / f"{stem}.png"))
    if app != "imt" and len(groups) > 1:
        styles = dict(zip(groups, itertools.cycle(["-", "--", ":", "-."]), strict=False))
        figures.append(_curve_figure(app, runs, "reduced training data",
                                     fig_dir / f"{kind}_reductions.png", styles))
    if app == "imt":
        example = _example_figure(runs[0], adapter, fig_dir / "imt_example.png")
        if example is not None:
            figures.append(example)
    figures.append(_trace_figure(runs, fig_dir / "validation_auc.png"))
    return figures


# ------------------------------------------------------------------ the report

def _conventions(app: str, runs: list[Finished], adapter: TajbakhshAdapter) -> list[str]:
    m = runs[0].metrics
    unit = {"polyp": f"{m.get('fp_unit')}s", "pe": "volumes",
            "frames": f"{m.get('bootstrap_unit')}s", "imt": "subjects"}[app]
    lines = [f"- intervals: 95%, percentile bootstrap resampling {unit} (assumed: "
             f"{BOOTSTRAP_METHOD.assumed}); {adapter.options.n_boot} replicates, seed "
             f"{adapter.options.bootstrap_seed}",
             "- two curves differ at an operating point when their 95% intervals do not "
             "overlap (Tajbakhsh 2016 Sec. VI, introduction)",
             "- test scores: a candidate's (frame's) score is the mean probability over its "
             "test patches (crops) (Tajbakhsh 2016 Sec. VI-A to VI-C)"]
    if app in ("polyp", "pe"):
        lines += [f"- hit rule: {m['hit_rule']}",
                  f"- false positives per {m['fp_unit']}; sensitivity between operating "
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
                  f"- errors in {m['units']}"]
    lines.append("- each run's `run.json` holds its resolved settings with their provenance, "
                 "`metrics.json` its scores and curves, `predictions.csv` its per-candidate "
                 "scores (intima-media: per-column boundaries), `manifest.json` the hashes "
                 "of data and weights")
    return lines


def _deviations(experiment: Experiment, adapter: TajbakhshAdapter) -> list[str]:
    out = list(experiment.deviations())
    manifest = adapter.dataset_dir / "manifest.json"
    if manifest.is_file():
        protocol = json.loads(manifest.read_text()).get("protocol", {})
        for key, value in sorted(protocol.items()):
            if value.get("set_by_user"):
                default = value["default"]
                origin = default.get("source") or f"assumed: {default.get('assumed', '')}"
                out.append(f"dataset `{key}` = {value['value']!r} (default "
                           f"{default['value']!r}; {origin})")
    for key, value in sorted(protocol_values(adapter.options).items()):
        if value.get("set_by_user"):
            out.append(f"scoring `{key}` = {value['value']!r} (default "
                       f"{value['default']['value']!r})")
    return out or ["none"]


def _assumptions(experiment: Experiment, adapter: TajbakhshAdapter) -> list[str]:
    seen: dict[str, str] = {}
    for cfg in experiment.configurations:
        for key, reason in cfg.assumptions().items():
            seen.setdefault(key, reason)
    lines = [f"- `{k}`: {v}" for k, v in sorted(seen.items())]
    manifest = adapter.dataset_dir / "manifest.json"
    if manifest.is_file():
        protocol = json.loads(manifest.read_text()).get("protocol", {})
        lines += [f"- dataset `{k}` = {v['value']!r}: {v['assumed']}"
                  for k, v in sorted(protocol.items()) if "assumed" in v]
    lines += [f"- scoring `{k}` = {v['value']!r}: {v['assumed']}"
              for k, v in sorted(protocol_values(adapter.options).items()) if "assumed" in v]
    if adapter.application != "imt":
        interpolation = ROC_INTERPOLATION if adapter.application == "frames" \
            else FROC_INTERPOLATION
        lines.append(f"- operating points read off the curves by {interpolation.value} "
                     f"interpolation: {interpolation.assumed}")
    snake = getattr(adapter, "snake", None)
    if snake is not None:
        lines += [f"- snake `{k}` = {v['value']!r}: {v.get('assumed', 'set by the spec')}"
                  for k, v in sorted(protocol_values(snake).items())]
    return lines


def build_tajbakhsh_report(spec_path: Path) -> Path:
    """Write REPORT.md, report.json and the figures of a Tajbakhsh 2016 spec's finished
    runs; returns the report's path."""
    experiment = load_experiment(spec_path)
    builder = experiment.dataset.builder
    if builder not in TAJBAKHSH_ADAPTERS:
        raise ConfigError(f"{spec_path}: dataset.builder {builder!r} is not a Tajbakhsh "
                          f"application ({', '.join(TAJBAKHSH_ADAPTERS)})")
    adapter = TAJBAKHSH_ADAPTERS[builder](experiment)
    app = adapter.application
    runs = _finished(experiment, adapter)
    if not runs:
        raise FileNotFoundError(f"{spec_path}: no finished runs yet; run `medtl run "
                                f"{spec_path}`")
    out_dir = experiment.results_dir
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(app, runs, adapter, fig_dir)
    published, source = _published(experiment)
    lines = [f"# {experiment.spec.title or experiment.spec.study}", "",
             f"Spec: `{experiment.path.name}` ({experiment.path}) · runs: `runs/` · "
             "generated by `medtl report`.", "",
             "## Results", "",
             f"One training / test split (the paper's); {len(runs)} finished run(s). The "
             f"paper reports these results as curves and box plots ({FIGURE[app]}); compare "
             "the figures below with them.", ""]
    lines += _table(app, runs, adapter)
    if published:
        lines += ["", f"Published ({source}):", ""]
        lines += [f"- {label}: {values}" for label, values in published.items()]
    else:
        lines += ["", "Published values: the paper gives no numbers for this study in its "
                  f"text; read them from its {FIGURE[app]}."]
    lines += ["", "## Statistical comparisons (95% intervals that do not overlap)", ""]
    lines += comparisons(runs)
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures]
    lines += ["", "## How every number is computed", ""]
    lines += _conventions(app, runs, adapter)
    lines += ["", "## Deviations from the paper (set by the spec)", ""]
    lines += [f"- {d}" for d in _deviations(experiment, adapter)]
    lines += ["", "## Assumptions (values the paper leaves open)", ""]
    lines += _assumptions(experiment, adapter)
    report = out_dir / "REPORT.md"
    tmp = report.with_name(".REPORT.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, report)
    summary = {r.plan.run_id: {"label": r.label, "data": r.data,
                               "operating_points": operating_points(r.metrics)}
               for r in runs}
    tmp = out_dir / ".report.json.tmp"
    tmp.write_text(json.dumps({"runs": summary, "published": published}, indent=1,
                              default=str))
    os.replace(tmp, out_dir / "report.json")
    return report
