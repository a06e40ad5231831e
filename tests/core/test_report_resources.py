"""What training cost (Shin Table VII): every run records its training time, images per
second, peak memory and hardware in run.json, and the reports set them beside Table VII."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from spec_helpers import PUBLISHED, tiny_ln_spec

from medtl.experiments import runner
from medtl.experiments.report.build import build_report
from medtl.experiments.report.context import FinishedRun, ReportContext, read_csv
from medtl.experiments.report.published import load_published
from medtl.experiments.report.resources import (
    duration_seconds,
    format_duration,
    published_row,
    resource_section,
)
from medtl.experiments.resources import (
    cpu_model,
    measure,
    process_gpu_mb,
    training_resources,
)
from medtl.experiments.spec import read_experiment


def _table_vii(study: str = "ild_patch"):
    return load_published(PUBLISHED).table("table_vii", study)


def test_paper_times_parse_and_print_as_the_paper_writes_them():
    assert duration_seconds("7m16s") == 436
    assert duration_seconds("1h2m") == 3720
    assert duration_seconds("20h24m") == 20 * 3600 + 24 * 60
    assert duration_seconds("soon") is None
    assert (format_duration(436), format_duration(3720), format_duration(12.34)) == \
        ("7m16s", "1h2m", "12.3s")


def test_a_configuration_finds_the_row_of_its_architecture():
    table = _table_vii()
    for label, row in (("CifarNet", "CifarNet"), ("AlexNet-TL-H", "AlexNet"),
                       ("AlexNet-RI-L", "AlexNet"), ("OverFeat-TL", "OverFeat"),
                       ("VGG-16-TL", "VGG-16"), ("GoogLeNet-RI-L", "GoogLeNet")):
        assert published_row(table, label)[0] == row
    assert published_row(table, "Roth et al. [22]") is None
    assert "K40" in table.hardware and "Sec. IV-C" in table.hardware


def test_nvidia_smi_lines_of_this_process_are_summed():
    text = "123, 500\n456, 700\n123, 20\n789, [N/A]\n"
    assert process_gpu_mb(text, 123) == 520
    assert process_gpu_mb(text, 789) is None
    assert process_gpu_mb("", 123) is None


def _trace(path: Path, rows: list[tuple[int, float]]) -> Path:
    path.write_text("epoch,iteration,seconds\n"
                    + "".join(f"{e},{it},{s}\n" for e, (it, s) in enumerate(rows, 1)))
    return path


def test_cpu_mode_records_time_images_and_host_memory_and_no_gpu(tmp_path):
    with measure(None) as usage:
        sum(range(100_000))
    r = training_resources(usage, _trace(tmp_path / "trace.csv", [(3, 1.5), (6, 2.5)]),
                           16, 0)
    assert (r["epochs"], r["iterations"], r["images"], r["training_seconds"]) == (2, 6, 96, 4.0)
    assert r["images_per_second"] == 24.0
    assert r["peak_host_memory_mb"] > 10
    assert r["peak_gpu_memory_mb"] is None and "CPU mode" in r["gpu_memory_note"]
    assert r["hardware"]["cpu"] == cpu_model() and r["hardware"]["gpu"] is None
    assert r["trained"] and r["device"] == "CPU"
    untrained = training_resources(usage, tmp_path / "absent.csv", 16, 0)
    assert not untrained["trained"] and untrained["images_per_second"] is None


def _finished(run_dir: Path, cid: str, label: str, resources: dict | None) -> FinishedRun:
    record = {"resources": resources} if resources else {}
    return FinishedRun(f"{cid}__fold1", cid, label, 1, 1.0, 1, run_dir, record, {})


def _resources(seconds: float, epochs: int, host_mb: float, cpu: str = "Test CPU") -> dict:
    return {"trained": True, "epochs": epochs, "iterations": epochs * 10, "batch_size": 8,
            "images": epochs * 80, "training_seconds": seconds,
            "images_per_second": epochs * 80 / seconds, "session_seconds": seconds + 1,
            "resumed_from_epoch": 0, "peak_host_memory_mb": host_mb,
            "host_memory_note": "ru_maxrss", "peak_gpu_memory_mb": None,
            "gpu_memory_note": "CPU mode: no GPU used", "device": "CPU",
            "hardware": {"cpu": cpu, "cpus": 2, "platform": "Linux", "gpu": None}}


def test_the_timing_table_sits_beside_table_vii_with_the_hardware(tmp_path):
    spec = tiny_ln_spec(tmp_path, configurations=["cifarnet_ri", "alexnet-l_ri"])
    experiment = read_experiment(spec)
    labels = {c.id: c.label for c in experiment.configurations}
    runs = [_finished(tmp_path, "cifarnet_ri", "CifarNet", _resources(100.0, 2, 2048)),
            _finished(tmp_path, "cifarnet_ri", "CifarNet", None),
            _finished(tmp_path, "alexnet-l_ri", "AlexNet-RI-L", _resources(30.0, 3, 512))]
    tables = load_published(PUBLISHED).for_study("ln_mediastinum")
    ctx = ReportContext(experiment, runs, [], tmp_path, tables, labels)
    lines, summary = resource_section(ctx, "table_vii")
    text = "\n".join(lines)
    assert "### Training time and memory (beside Shin 2016 Table VII)" in text
    # 50 s per epoch; LN trains 30 epochs in the paper (Sec. III-C): 25 minutes
    assert ("| CifarNet | 2 (1 recorded) | 2 | 1m40s | 50.00 | 25m0s (30) | 1.6 | 2.00 GB | "
            "- | CifarNet: 7m16s, 2.25 GB |") in text
    assert "| AlexNet-RI-L | 1 | 3 | 30.0s | 10.00 | 5m0s (30) | 8.0 | 0.50 GB | - | " \
           "AlexNet: 1h2m, 3.45 GB |" in text
    assert "Measured on: Test CPU (2 CPUs), Linux; GPU: no GPU (CPU mode)." in text
    assert "Peak GPU memory: CPU mode: no GPU used." in text
    assert "one NVidia K40 GPU" in text
    assert summary["configurations"]["cifarnet_ri"]["recorded"] == 1
    assert summary["published"]["rows"]["VGG-16"] == ["20h24m", 9.26]

    without = ReportContext(experiment, runs, [], tmp_path, [], labels)
    assert "| CifarNet | 2 (1 recorded) |" in "\n".join(resource_section(without)[0])


@pytest.mark.slow
def test_a_trained_run_records_its_cost_and_the_report_shows_it(results_root, tmp_path,
                                                                 caffe):
    spec = tiny_ln_spec(tmp_path, "cost", training={"max_epochs": 2})
    assert runner.run_experiment(spec, progress=False) == {
        "cifarnet_ri__fold1__frac1__seed1": "done"}
    run_dir = results_root / "shin2016" / "cost" / "runs" / "cifarnet_ri__fold1__frac1__seed1"
    record = json.loads((run_dir / "run.json").read_text())
    r = record["resources"]
    trace = read_csv(run_dir / "trace.csv")
    batch = record["settings"]["values"]["solver.batch_size"]
    assert r["epochs"] == 2 and r["iterations"] == int(trace[-1]["iteration"]) > 0
    assert r["batch_size"] == batch and r["images"] == r["iterations"] * batch
    assert r["training_seconds"] == pytest.approx(sum(float(t["seconds"]) for t in trace))
    assert r["images_per_second"] == pytest.approx(r["images"] / r["training_seconds"],
                                                   rel=1e-3)
    assert r["session_seconds"] >= r["training_seconds"]
    # measured in the `medtl run-one` child that trained, not in this process
    assert f"pid {os.getpid()})" not in r["host_memory_note"]
    assert r["peak_host_memory_mb"] > 50
    assert r["peak_gpu_memory_mb"] is None and r["gpu_memory_note"] == "CPU mode: no GPU used"
    assert r["hardware"] == {**r["hardware"], "cpu": cpu_model(), "gpu": None}

    report = build_report(spec)
    text = report.read_text()
    assert "### Training time and memory (beside Shin 2016 Table VII)" in text
    assert "CifarNet: 7m16s, 2.25 GB |" in text and f"Measured on: {cpu_model()}" in text
    summary = json.loads((report.parent / "report.json").read_text())
    assert summary["resources"]["configurations"]["cifarnet_ri"]["trained"] == 1
    figure = report.parent / "figures" / "activations_cifarnet_ri.png"
    assert figure.stat().st_size > 1000 and f"![{figure.stem}]" in text
