"""Figures every report draws the same way: training traces (Shin Fig. 11, Tajbakhsh
Fig. 10), first-layer filters (Shin Fig. 12), ROC curves and confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medtl.experiments.report.context import FinishedRun

MPL_BACKEND = "Agg"
DPI = 110
TRACE_PANELS = {"loss": ("loss", "training (solid) and validation (dashed) loss"),
                "val_accuracy": ("validation accuracy", "validation accuracy"),
                "val_auc": ("validation AUC", "validation AUC")}


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


def trace_figure(runs: list[tuple[str, FinishedRun]], path: Path,
                 panels: tuple[str, ...] = ("loss",), title: str = "") -> Path:
    """Per epoch, for each (name, run): the loss (training solid, validation dashed) and/or
    the validation accuracy or AUC; runs that trained nothing are left out."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for name, run in runs:
        rows = run.trace()
        if not rows:
            continue
        epochs = [int(r["epoch"]) for r in rows]
        colour = None
        for ax, panel in zip(axes[0], panels, strict=True):
            if panel == "loss":
                line, = ax.plot(epochs, [float(r["train_loss"]) for r in rows], marker="o",
                                ms=3, color=colour, label=f"{name} train")
                colour = line.get_color()
                ax.plot(epochs, [float(r["val_loss"]) for r in rows], ls="--", marker="x",
                        ms=3, color=colour, label=f"{name} val")
            else:
                line, = ax.plot(epochs, [float(r[panel]) for r in rows], marker="o", ms=3,
                                color=colour, label=name)
                colour = line.get_color()
    for ax, panel in zip(axes[0], panels, strict=True):
        ylabel, panel_title = TRACE_PANELS[panel]
        ax.set(xlabel="epoch", ylabel=ylabel, title=panel_title)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def filter_figure(name: str, run: FinishedRun, fig_dir: Path) -> Path | None:
    """The first convolution's filters of the selected weights as a colour mosaic (Shin
    Fig. 12); Caffe's input channel 0 is drawn as red."""
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
    fig, axes = pyplot.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < n:
            f = first[i].transpose(1, 2, 0)
            ax.imshow((f - f.min()) / (np.ptp(f) or 1), interpolation="nearest")
    fig.suptitle(f"{name}: first-layer filters", fontsize=8)
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


def confusion_figure(panels: list[tuple[str, Any, list[str]]], path: Path,
                     note: str = "") -> Path:
    """Row-normalised confusion matrices (title, matrix, class names): truth down,
    predicted across, each cell's fraction written in it."""
    pyplot = plt()
    side = 2.6 if max(len(p[2]) for p in panels) <= 2 else 3.4
    fig, axes = pyplot.subplots(1, len(panels), figsize=(side * len(panels), side),
                                squeeze=False)
    for ax, (title, matrix, classes) in zip(axes[0], panels, strict=True):
        m = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.6 else "black")
        ticks = list(range(len(classes)))
        ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
               xlabel="predicted", ylabel="truth", title=title)
        ax.title.set_fontsize(7)
        ax.tick_params(labelsize=7)
    if note:
        fig.suptitle(note, fontsize=8)
    return save_figure(fig, path)
