"""Figures like the papers' (issue 10, item 15): training traces of every fold with the
selected epoch marked (Shin Fig. 11), FROC curves with bootstrap bands and the published
points (Shin Fig. 8), confusion matrices with true/predicted axes and the decision rule.
Each is checked on what is handed to matplotlib, and written as a non-empty file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medtl.experiments.report.context import FinishedRun
from medtl.experiments.report.figures import (
    FONT,
    FrocSeries,
    confusion_figure,
    draw_confusion,
    draw_froc,
    draw_traces,
    froc_figure,
    plt,
    trace_figure,
    trace_series,
)


def _run(root: Path, config: str, fold: int, selected: int, epochs: int = 4) -> FinishedRun:
    run_dir = root / f"{config}__fold{fold}"
    run_dir.mkdir(parents=True)
    with open(run_dir / "trace.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "val_loss", "val_accuracy", "val_auc"])
        for e in range(1, epochs + 1):
            w.writerow([e, 1.0 / e, 1.0 / e + 0.1 * fold + (0.5 if e > selected else 0.0),
                        0.5 + 0.05 * e, ""])
    return FinishedRun(f"{config}__fold{fold}", config, config.upper(), fold, 1.0, 1, run_dir,
                       {}, {"selected_epoch": selected, "selection": {"min_val_loss": 0.3}})


@pytest.fixture
def runs(tmp_path) -> list[tuple[str, FinishedRun]]:
    chosen = {("a", 1): 2, ("a", 2): 3, ("a", 3): 4, ("b", 1): 1, ("b", 2): 2, ("b", 3): 2}
    return [(config.upper(), _run(tmp_path, config, fold, epoch))
            for (config, fold), epoch in chosen.items()]


def _stars(ax) -> list[tuple[float, float]]:
    return [(float(line.get_xdata()[0]), float(line.get_ydata()[0]))
            for line in ax.lines if line.get_marker() == "*"]


def test_every_fold_is_traced_with_its_selected_epoch(runs, tmp_path):
    series = trace_series(runs)
    assert [(s.name, s.label, s.selected_epoch) for s in series] == [
        ("A", "fold 1", 2), ("A", "fold 2", 3), ("A", "fold 3", 4),
        ("B", "fold 1", 1), ("B", "fold 2", 2), ("B", "fold 3", 2)]
    fig = draw_traces(series, panels=("loss", "val_accuracy"))
    try:
        axes = np.array(fig.axes).reshape(2, 2)          # a row per configuration
        assert axes[0, 0].get_title().startswith("A:") and axes[1, 0].get_title().startswith("B:")
        # Loss panel: the star sits on each fold's validation loss at its selected epoch.
        fold2 = next(s for s in series if s.name == "A" and s.label == "fold 2")
        assert _stars(axes[0, 0]) == [(2.0, 1 / 2 + 0.1), (3.0, 1 / 3 + 0.2),
                                      (4.0, 1 / 4 + 0.3)]
        assert fold2.values["val_loss"][2] == pytest.approx(1 / 3 + 0.2)
        assert [x for x, _ in _stars(axes[1, 1])] == [1.0, 2.0, 2.0]
        assert sum(len(ax.lines) for ax in axes.ravel()) > 12
        assert "lowest validation loss" in fig._suptitle.get_text()
        assert min(t.get_fontsize() for ax in axes.ravel() for t in ax.get_xticklabels()) \
            >= FONT
    finally:
        plt().close(fig)
    path = trace_figure(runs, tmp_path / "traces.png", panels=("loss", "val_accuracy"))
    assert path.stat().st_size > 1000


def test_a_selected_epoch_outside_the_trace_is_not_marked(tmp_path):
    run = _run(tmp_path, "c", 1, selected=0)               # 0: nothing trained / kept
    series = trace_series([("C", run)])
    assert series[0].selected_epoch is None and series[0].label == "C"
    fig = draw_traces(series)
    try:
        assert _stars(fig.axes[0]) == []
    finally:
        plt().close(fig)


def test_froc_curves_with_bands_and_published_points(tmp_path):
    grid = np.linspace(0, 8, 9).tolist()
    series = [FrocSeries("CifarNet", [0, 1, 3, 8], [0, 0.5, 0.7, 0.8],
                         (grid, [0.3] * 9, [0.9] * 9), [(3.0, 0.70)]),
              FrocSeries("AlexNet-RI-H", [0, 2, 8], [0, 0.6, 0.9], (grid, [0.4] * 9, [1.0] * 9),
                         [(3.0, 0.79)])]
    fig = draw_froc(series, unit="patient", max_fp=8.0, marks=(3.0,),
                    published_source="Shin 2016 Table II", others=[("Roth et al. [22]", 3.0,
                                                                    0.70)])
    try:
        ax = fig.axes[0]
        bands = [c for c in ax.collections if len(c.get_paths()) and
                 len(c.get_paths()[0].vertices) > 2]
        assert len(bands) == 2
        diamonds = [(line.get_xdata()[0], line.get_ydata()[0], line.get_markeredgecolor())
                    for line in ax.lines if line.get_marker() == "D" and len(line.get_xdata())]
        curves = {line.get_label(): line.get_color() for line in ax.lines
                  if line.get_label() in ("CifarNet", "AlexNet-RI-H")}
        assert diamonds == [(3.0, 0.70, curves["CifarNet"]), (3.0, 0.79, curves["AlexNet-RI-H"])]
        crosses = [line for line in ax.lines if line.get_marker() == "X"]
        assert crosses[0].get_label() == "Roth et al. [22] (published)"
        assert ax.get_xlabel() == "false positives per patient" and ax.get_xlim() == (0, 8)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "published (Shin 2016 Table II)" in legend and "95% bootstrap band" in legend
    finally:
        plt().close(fig)
    path = froc_figure(series, tmp_path / "froc.png", unit="patient", max_fp=8.0)
    assert path.stat().st_size > 1000


def test_confusion_matrix_axes_decision_and_text(tmp_path):
    panels = [("CifarNet", [[0.75, 0.25], [0.4, 0.6]], ["false", "node"]),
              ("six classes", np.eye(6).tolist(), ["NM", "EM", "GG", "FB", "MN", "CD"])]
    fig = draw_confusion(panels, decision="predicted node when p >= 0.5 (threshold 0.5)")
    try:
        first, second = fig.axes
        assert (first.get_xlabel(), first.get_ylabel()) == ("predicted class", "true class")
        assert [t.get_text() for t in first.get_yticklabels()] == ["false", "node"]
        cells = [t for t in first.texts]
        assert [t.get_text() for t in cells] == ["0.75", "0.25", "0.40", "0.60"]
        assert min(t.get_fontsize() for t in (*cells, *second.texts)) >= FONT
        assert "threshold 0.5" in fig._supxlabel.get_text()
    finally:
        plt().close(fig)
    path = confusion_figure(panels, tmp_path / "confusion.png", decision="argmax")
    assert path.stat().st_size > 1000
