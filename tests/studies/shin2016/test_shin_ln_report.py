"""The lymph-node report states its FROC hit rule in the body and draws Fig. 8 (curves with
bands and Table II's points), Fig. 11 (every fold's trace) and the confusion matrices, from
finished runs written by hand (their weights drawn by real Caffe)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from spec_helpers import PUBLISHED, tiny_ln_spec

from medtl.experiments.report.context import FinishedRun, ReportContext
from medtl.experiments.report.published import load_published
from medtl.experiments.spec import read_experiment
from medtl.paths import REPO
from medtl.studies.shin2016.ln.report import froc_report
from medtl.studies.shin2016.ln.scoring import LnScoring
from medtl.surgery import random_weights

DEPLOY = REPO / "prototxt/shin2016/ln_mediastinum/cifarnet_ri/deploy.prototxt"
NODES = [{"patient_id": p, "node": "0", "fold": "1", "x": "0", "y": "0", "z": "0",
          "sizes_mm": "10", "where": ""} for p in ("P1", "P2", "P3")]


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _run(root: Path, fold: int, patient: str, weights: Path) -> FinishedRun:
    run_dir = root / f"cifarnet_ri__fold{fold}"
    run_dir.mkdir(parents=True)
    _write(run_dir / "predictions.csv", [
        {"candidate_id": f"{patient}-t", "patient_id": patient, "label": 1, "node": "0",
         "x": "1", "y": "0", "z": "0", "views": 2, "score": 0.6 + 0.1 * fold},
        {"candidate_id": f"{patient}-f", "patient_id": patient, "label": 0, "node": "",
         "x": "40", "y": "0", "z": "0", "views": 2, "score": 0.3 + 0.2 * fold}])
    _write(run_dir / "trace.csv", [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e + 0.1,
                                    "val_accuracy": 0.5, "val_auc": ""} for e in (1, 2, 3)])
    (run_dir / "selected.caffemodel").write_bytes(weights.read_bytes())
    metrics = {"selected_epoch": fold, "selection": {"min_val_loss": 0.4}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return FinishedRun(run_dir.name, "cifarnet_ri", "CifarNet", fold, 1.0, 1, run_dir, {},
                       metrics)


@pytest.mark.parametrize("rule", ["tcia_link", "luna16"])
def test_the_report_names_its_hit_rule_and_draws_the_papers_figures(tmp_path, caffe, rule):
    weights = random_weights(DEPLOY, tmp_path / "w.caffemodel", seed=1)
    experiment = read_experiment(tiny_ln_spec(tmp_path, "report"))
    runs = [_run(tmp_path / "runs", f, p, weights) for f, p in ((1, "P1"), (2, "P2"),
                                                                   (3, "P3"))]
    figures = tmp_path / "figures"
    figures.mkdir()
    ctx = ReportContext(experiment, runs, [], figures,
                        load_published(PUBLISHED).for_study("ln_mediastinum"),
                        {"cifarnet_ri": "CifarNet"})
    body = froc_report(ctx, NODES, LnScoring(hit_rule=rule))
    text = "\n".join(body.lines)
    assert f"Hit rule: {rule}: " in text
    assert not any("hit rule" in n for n in body.notes)
    for name in ("froc.png", "training_traces.png", "confusion.png"):
        assert (figures / name).stat().st_size > 1000, name
    assert body.summary["scores"]["cifarnet_ri"]["hit_rule"] == rule
