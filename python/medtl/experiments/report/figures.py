"""Figures every report draws the same way: training traces of every fold with the selected
epoch marked (Shin Fig. 11, Tajbakhsh Fig. 10), first-layer filters (Shin Fig. 12), ROC
curves, FROC curves with bootstrap bands and the paper's points (Shin Fig. 8) and confusion
matrices (true class down, predicted across, the decision rule stated).

The trace, FROC and confusion figures are drawn by `draw_*` functions that return the
matplotlib figure (what a test inspects) and saved by the `*_figure` functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl.experiments.report.context import FinishedRun

MPL_BACKEND = "Agg"
DPI = 110
TRACE_PANELS = {"loss": ("loss", "training (solid) and validation (dashed) loss"),
                "val_accuracy": ("validation accuracy", "validation accuracy"),
                "val_auc": ("validation AUC", "validation AUC")}
SELECTION_TEXT = {"min_val_loss": "lowest validation loss",
                  "max_val_auc": "highest validation AUC"}
FONT = 8            # the smallest text size of the figures drawn here


def plt():
    """pyplot on the non-interactive backend."""
    import matplotlib

    matplotlib.use(MPL_BACKEND)
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig, path: Path) -> Path:
    """Lay out, write at the reports' resolution (atomically), and free the figure."""
    from medtl import io

    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip(".") or "png")
    plt().close(fig)
    return path


@dataclass(frozen=True)
class TraceSeries:
    """One run's training trace as drawn: `values` maps a trace column (train_loss,
    val_loss, val_accuracy, val_auc) to its value per epoch (NaN where not recorded)."""

    name: str                       # the configuration (a row of the figure)
    label: str                      # its legend entry: "fold 2" (or the name, one run each)
    epochs: list[int]
    values: dict[str, list[float]]
    selected_epoch: int | None      # the epoch whose weights were kept, if it is traced
    selection: str                  # the rule that chose it (e.g. min_val_loss)


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def trace_series(runs: Sequence[tuple[str, FinishedRun]]) -> list[TraceSeries]:
    """The traces of (name, run) pairs, each run of a name labelled by its fold (and its
    seed and data fraction where the name's runs differ in them); runs that trained nothing
    are left out."""
    out = []
    for name, run in runs:
        rows = run.trace()
        if not rows:
            continue
        epochs = [int(r["epoch"]) for r in rows]
        values = {col: [_number(r.get(col)) for r in rows]
                  for col in ("train_loss", "val_loss", "val_accuracy", "val_auc")}
        chosen = run.metrics.get("selected_epoch")
        selection = next(iter(run.metrics.get("selection") or {}), "")
        out.append(TraceSeries(name, _run_label(name, run, runs), epochs, values,
                               int(chosen) if chosen in epochs else None, selection))
    return out


def _run_label(name: str, run: FinishedRun, runs: Sequence[tuple[str, FinishedRun]]) -> str:
    """The name itself for its only run, else what tells its runs apart: "fold 2, seed 1"."""
    mine = [r for n, r in runs if n == name]
    if len(mine) == 1:
        return name
    parts = [f"fold {run.fold}"]
    if len({r.seed for r in mine}) > 1:
        parts.append(f"seed {run.seed}")
    if len({r.fraction for r in mine}) > 1:
        parts.append(f"{run.fraction:.0%} data")
    return ", ".join(parts)


def draw_traces(series: Sequence[TraceSeries], panels: tuple[str, ...] = ("loss",),
                title: str = ""):
    """The figure of `trace_figure`: one row of panels per configuration when any has
    several runs (its folds in one panel), else one row with every run; the selected epoch
    of each run is a star on its validation curve and a dotted vertical line."""
    from matplotlib.ticker import MaxNLocator

    names = list(dict.fromkeys(s.name for s in series)) or [""]
    per_row = any(sum(s.name == n for s in series) > 1 for n in names)
    rows = names if per_row else [""]
    pyplot = plt()
    fig, axes = pyplot.subplots(len(rows), len(panels), squeeze=False,
                                figsize=(5.0 * len(panels), 3.2 * len(rows) + 0.6))
    for r, row in enumerate(rows):
        for s in (x for x in series if not per_row or x.name == row):
            colour = None
            for ax, panel in zip(axes[r], panels, strict=True):
                colour = _trace_lines(ax, s, panel, colour)
        for ax, panel in zip(axes[r], panels, strict=True):
            ylabel, panel_title = TRACE_PANELS[panel]
            ax.set_xlabel("epoch", fontsize=FONT)
            ax.set_ylabel(ylabel, fontsize=FONT)
            ax.set_title(f"{row}: {panel_title}" if row else panel_title, fontsize=FONT + 1)
            ax.tick_params(labelsize=FONT)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.lines:
                ax.legend(fontsize=FONT - 1)
    chosen = {s.selection for s in series if s.selection}
    rule = ", ".join(SELECTION_TEXT.get(c, c) for c in sorted(chosen))
    fig.suptitle("\n".join(t for t in (title, f"star: selected epoch ({rule})" if rule
                                         else "star: selected epoch") if t), fontsize=FONT + 1)
    return fig


def _trace_lines(ax, s: TraceSeries, panel: str, colour: str | None) -> str:
    """Draw one run on one panel; returns its colour (one colour per run)."""
    if panel == "loss":
        line, = ax.plot(s.epochs, s.values["train_loss"], marker="o", ms=3, color=colour,
                        label=f"{s.label} train")
        ax.plot(s.epochs, s.values["val_loss"], ls="--", marker="x", ms=3,
                color=line.get_color(), label=f"{s.label} val")
        marked = "val_loss"
    else:
        line, = ax.plot(s.epochs, s.values[panel], marker="o", ms=3, color=colour,
                        label=s.label)
        marked = panel
    colour = line.get_color()
    if s.selected_epoch is not None:
        y = s.values[marked][s.epochs.index(s.selected_epoch)]
        ax.axvline(s.selected_epoch, color=colour, lw=0.8, ls=":")
        ax.plot([s.selected_epoch], [y], marker="*", ms=11, color=colour, mec="black",
                mew=0.6, ls="none", label=f"{s.label} selected (epoch {s.selected_epoch})")
    return colour


def trace_figure(runs: list[tuple[str, FinishedRun]], path: Path,
                 panels: tuple[str, ...] = ("loss",), title: str = "") -> Path:
    """Per epoch, for each (name, run): the loss (training solid, validation dashed) and/or
    the validation accuracy or AUC, the selected epoch marked (`draw_traces`); pass every
    fold's run so that each is shown."""
    return save_figure(draw_traces(trace_series(runs), panels, title), path)


def filter_figure(name: str, run: FinishedRun, fig_dir: Path) -> Path | None:
    """The first convolution's filters of the selected weights as a colour mosaic (Shin
    Fig. 12), drawn as the RGB picture the data came from: Caffe's input channel 2 as red, 1
    as green, 0 as blue (`medtl.datasets.channels`); the title says what each channel holds
    as the run's dataset manifest names it."""
    from medtl.datasets.channels import dataset_channels, legend, to_picture
    from medtl.paths import from_results
    from medtl.surgery import read_weights

    weights = read_weights(run.run_dir / "selected.caffemodel")
    first = next((w[0] for w in weights.values() if w[0].ndim == 4 and w[0].shape[1] == 3),
                 None)
    if first is None:
        return None
    pyplot = plt()
    n = first.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = pyplot.subplots(rows, cols, figsize=(max(cols * 0.6, 4.5), rows * 0.6 + 0.6))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < n:
            f = to_picture(first[i]).transpose(1, 2, 0)
            ax.imshow((f - f.min()) / (np.ptp(f) or 1), interpolation="nearest")
    dataset = run.record.get("dataset", {}).get("dir")
    channels = dataset_channels(None if dataset is None else from_results(dataset))
    fig.suptitle(f"{name}: first-layer filters\n{legend(channels)}", fontsize=FONT)
    return save_figure(fig, fig_dir / f"filters_{run.config_id}.png")


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
               what: str) -> Path:
    """ROC curves of (labels, scores) per name, with their AUC."""
    from medtl.metrics import roc_auc, roc_curve

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5.5, 4.5))
    for label, (y, s) in curves.items():
        if 0 < y.sum() < len(y):
            c = roc_curve(y, s)
            ax.plot(c.fpr, c.tpr, label=f"{label} (AUC {roc_auc(y, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate",
           ylabel="true positive rate", title=f"ROC, {what}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def draw_confusion(panels: list[tuple[str, Any, list[str]]], decision: str):
    """The figure of `confusion_figure`: per panel (title, row-normalised matrix, class
    names) the true class down and the predicted class across, each cell's fraction of its
    true class written in it; `decision` (how a prediction was made, e.g. the threshold) is
    stated under the panels."""
    pyplot = plt()
    k = max(len(p[2]) for p in panels)
    side = max(3.0, 0.62 * k + 1.6)
    fig, axes = pyplot.subplots(1, len(panels), figsize=(side * len(panels), side + 0.5),
                                squeeze=False)
    for ax, (title, matrix, classes) in zip(axes[0], panels, strict=True):
        m = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}" if np.isfinite(v) else "-", ha="center", va="center",
                    fontsize=FONT + 1, color="white" if np.isfinite(v) and v > 0.6 else "black")
        ticks = list(range(len(classes)))
        ax.set_xticks(ticks, classes, fontsize=FONT, rotation=45 if k > 3 else 0,
                      ha="right" if k > 3 else "center")
        ax.set_yticks(ticks, classes, fontsize=FONT)
        ax.set_xlabel("predicted class", fontsize=FONT + 1)
        ax.set_ylabel("true class", fontsize=FONT + 1)
        ax.set_title(title, fontsize=FONT + 1)
    fig.supxlabel(f"fraction of each true class (rows sum to 1); {decision}",
                  fontsize=FONT)
    return fig


def confusion_figure(panels: list[tuple[str, Any, list[str]]], path: Path,
                     decision: str) -> Path:
    """Row-normalised confusion matrices (title, matrix, class names), true class down,
    predicted class across, with the decision rule (`draw_confusion`)."""
    return save_figure(draw_confusion(panels, decision), path)


@dataclass(frozen=True)
class FrocSeries:
    """One configuration's FROC curve as drawn: its operating points, the bootstrap band
    (grid, low, high; None without one) and the paper's points (fp, sensitivity)."""

    name: str
    fp: list[float]
    sensitivity: list[float]
    band: tuple[list[float], list[float], list[float]] | None = None
    published: list[tuple[float, float]] = field(default_factory=list)


def draw_froc(series: Sequence[FrocSeries], *, unit: str, max_fp: float,
              marks: Sequence[float] = (), published_source: str = "", title: str = "",
              others: Sequence[tuple[str, float, float]] = ()):
    """The figure of `froc_figure`: each curve (operating points joined linearly, as the
    sensitivity at an FP rate is read) over its shaded 95% bootstrap band, the paper's
    point of the same configuration as a hollow diamond in the same colour, `others`
    (name, fp, sensitivity: published rows without a curve) as black crosses, and dotted
    verticals at `marks` (e.g. 3 FP)."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7.0, 5.2))
    alpha = 0.15 if len(series) <= 3 else 0.07        # overlapping bands stay readable
    for s in series:
        line, = ax.plot(s.fp, s.sensitivity, lw=1.4, label=s.name)
        colour = line.get_color()
        if s.band is not None:
            grid, low, high = s.band
            ax.fill_between(grid, low, high, color=colour, alpha=alpha, lw=0)
        for fp, sens in s.published:
            ax.plot([fp], [sens], marker="D", ms=7, mfc="none", mec=colour, mew=1.5,
                    ls="none")
    for name, fp, sens in others:
        ax.plot([fp], [sens], marker="X", ms=7, color="black", ls="none",
                label=f"{name} (published)")
    for x in marks:
        ax.axvline(x, color="grey", lw=0.8, ls=":")
    if any(s.published for s in series):
        ax.plot([], [], marker="D", mfc="none", mec="grey", ls="none",
                label=f"published ({published_source})" if published_source else "published")
    if any(s.band is not None for s in series):
        ax.fill_between([], [], [], color="grey", alpha=0.15, label="95% bootstrap band")
    ax.set_xlim(0, max_fp)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"false positives per {unit}", fontsize=FONT + 1)
    ax.set_ylabel("sensitivity", fontsize=FONT + 1)
    ax.set_title(title or "FROC", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT - 1, loc="lower right", ncol=2 if len(series) > 6 else 1)
    return fig


def froc_figure(series: Sequence[FrocSeries], path: Path, *, unit: str, max_fp: float,
                marks: Sequence[float] = (), published_source: str = "", title: str = "",
                others: Sequence[tuple[str, float, float]] = ()) -> Path:
    """FROC curves with bootstrap bands and the paper's points (Shin Fig. 8; `draw_froc`)."""
    return save_figure(draw_froc(series, unit=unit, max_fp=max_fp, marks=marks,
                                 published_source=published_source, title=title,
                                 others=others), path)


def _shown_image(record: np.ndarray) -> np.ndarray:
    """A C x H x W record for imshow, stretched to [0, 1]: three channels as the RGB picture
    they came from (Caffe channel 2 as red, as the filter mosaics), else channel 0 in grey."""
    from medtl.datasets.channels import to_picture

    x = np.asarray(record, float)
    x = to_picture(x).transpose(1, 2, 0) if x.shape[0] == 3 else x[0]
    return (x - x.min()) / (np.ptp(x) or 1)


def _mosaic(maps: np.ndarray) -> tuple[np.ndarray, int]:
    """C x h x w maps tiled in a square grid one pixel apart (NaN between); returns the
    mosaic and its number of columns."""
    c, h, w = maps.shape
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(c):
        r, k = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = maps[i]
    return out, cols


def activation_figure(images: np.ndarray, maps: dict[str, np.ndarray], path: Path, *,
                      captions: list[str], blob: str, title: str = "",
                      top: float = 0.05) -> Path:
    """Activation maps of a few test images (Shin Fig. 13): per image (a row) the image as
    the net sees it (centre crop, before the mean is subtracted) and, for each set of weights
    in `maps` (name -> n x C x h x w activations of `blob`, e.g. pretrained and trained), the
    channel-mean map beside a mosaic of every channel's map, the channels whose peak is in
    the top `top` fraction outlined in green (Shin marks pool5 units with green boxes)."""
    from matplotlib.patches import Rectangle

    pyplot = plt()
    n = len(images)
    ncols = 1 + 2 * len(maps)
    fig, axes = pyplot.subplots(n, ncols, figsize=(2.0 * ncols, 2.1 * n), squeeze=False)
    for i in range(n):
        axes[i][0].imshow(_shown_image(images[i]), cmap="gray", interpolation="nearest")
        axes[i][0].set_title(captions[i], fontsize=7)
        for j, (name, act) in enumerate(maps.items()):
            a = np.asarray(act[i], float)
            c, h, w = a.shape
            mean_ax, mosaic_ax = axes[i][1 + 2 * j], axes[i][2 + 2 * j]
            mean_ax.imshow(a.mean(axis=0), cmap="viridis", interpolation="nearest")
            mean_ax.set_title(f"{name}: mean of {c} channels\n{h}x{w}", fontsize=6)
            tiles, cols = _mosaic(a)
            mosaic_ax.imshow(tiles, cmap="gray", interpolation="nearest",
                             vmin=0, vmax=np.nanmax(tiles) or 1)
            peaks = a.reshape(c, -1).max(axis=1)
            chosen = np.flatnonzero((peaks >= np.quantile(peaks, 1 - top)) & (peaks > 0))
            for k in chosen:
                r, q = divmod(int(k), cols)
                mosaic_ax.add_patch(Rectangle((q * (w + 1) - 0.5, r * (h + 1) - 0.5), w, h,
                                              fill=False, edgecolor="lime", lw=0.6))
            mosaic_ax.set_title(f"{name}: every channel\n(top {top:.0%} peaks outlined)",
                                fontsize=6)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle(title or f"{blob} activations", fontsize=8)
    return save_figure(fig, path)
