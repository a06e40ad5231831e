"""`medtl run` and `medtl report` on a small synthetic lymph-node study, with real Caffe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from spec_helpers import tiny_ln_spec

from medtl.config import ConfigError
from medtl.errors import OutputExistsError
from medtl.experiments import runner
from medtl.experiments.plan import load_plan
from medtl.experiments.report.build import build_report
from medtl.zoo import WeightsNotFoundError


def _write_spec(folder: Path, name: str, **changes) -> Path:
    return tiny_ln_spec(folder, name, **{"training": {"max_epochs": 2}, **changes})


@pytest.mark.slow
def test_a_run_produces_every_file_and_a_second_run_trains_nothing(results_root, tmp_path,
                                                                    caffe):
    spec_path = _write_spec(tmp_path, "tiny")
    status = runner.run_experiment(spec_path, progress=False)
    assert status == {"cifarnet_ri__fold1__frac1__seed1": "done"}
    run_dir = results_root / "shin2016" / "tiny" / "runs" / "cifarnet_ri__fold1__frac1__seed1"
    for name in ("run.json", "solver.prototxt", "net/train.prototxt", "trace.csv",
                 "selected.caffemodel", "predictions.csv", "manifest.json", "metrics.json",
                 "run.log"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["tpr_at_3fp"]["estimate"] <= 1
    assert metrics["patients"] == 2
    resolved = json.loads((run_dir / "run.json").read_text())
    assert resolved["provenance"]["solver.momentum"]["source"] == "Shin 2016 Sec. III-C"
    assert "training.max_epochs = 2 (the paper's: 30)" in resolved["deviations"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["caffe"]["upstream_commit"].startswith("99bd997")

    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    again = runner.run_experiment(spec_path, progress=False)
    assert again == {"cifarnet_ri__fold1__frac1__seed1": "finished earlier"}
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before

    report = build_report(spec_path)
    text = report.read_text()
    assert "| CifarNet | 1 |" in text and "0.91, 0.70" in text
    assert "Hit rule: tcia_link: a candidate hits the node it is linked to" in text
    assert "training.max_epochs = 2 (the paper's: 30)" in text
    assert "assumed" in text
    for figure in ("froc.png", "training_traces.png", "filters_cifarnet_ri.png",
                   "confusion.png"):
        assert (report.parent / "figures" / figure).stat().st_size > 1000, figure


def test_a_run_directory_with_other_settings_is_never_overwritten(results_root, tmp_path,
                                                                   caffe):
    first = _write_spec(tmp_path, "clash")
    plan = load_plan(first)
    run = plan.runs[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "run.json").write_text(json.dumps({"run_id": "someone else's"}))
    with pytest.raises(OutputExistsError, match="never overwritten"):
        runner.run_one(plan, run, progress=False)
    assert json.loads((run.run_dir / "run.json").read_text()) == {"run_id": "someone else's"}


def test_missing_pretrained_weights_say_where_to_get_them(results_root, tmp_path, caffe):
    no_entry = _write_spec(tmp_path, "tl_no_entry", configurations=["alexnet-h_tl"])
    with pytest.raises(ConfigError, match=r"no entry for alexnet-h.*bvlc_alexnet.*"
                                          r"9116a64c0fbe4459d18f4bb6b56d647b63920377"):
        load_plan(no_entry)
    absent = _write_spec(tmp_path, "tl_absent", configurations=["alexnet-h_tl"],
                         pretrained={"weights": {"alexnet-h": "bvlc_alexnet"},
                                     "search_dirs": [str(tmp_path / "nowhere")]})
    with pytest.raises(WeightsNotFoundError, match="9116a64c0fbe4459d18f4bb6b56d647b63920377"):
        runner.run_experiment(absent, progress=False)
    plan = load_plan(absent)
    assert not plan.runs[0].run_dir.exists()
    assert not plan.study.dataset_dir.exists()      # found before the dataset is built


def test_medtl_run_rejects_a_bad_spec_naming_the_key(tmp_path):
    bad = _write_spec(tmp_path, "bad", foldz=[1])
    result = subprocess.run([sys.executable, "-m", "medtl", "run", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown key 'foldz'" in result.stderr
