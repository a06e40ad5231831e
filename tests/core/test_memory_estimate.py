"""The memory a run will take, estimated before training (medtl.experiments.memory): within a
factor of what Caffe measurably takes on a small net, DenseNet-121 at batch 16 near the
10.8 GB it took, and `medtl run` stopping with one line, before any data are built, when the
spec's batch does not fit."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from spec_helpers import tiny_ln_spec

from medtl import cli
from medtl.datasets.lmdb_writer import LmdbWriter
from medtl.errors import RunError
from medtl.experiments import memory
from medtl.protocols import configurations
from medtl.prototxt import read_net
from medtl.provenance import assumed

SIDE = 48
NET = """name: "small"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.0039 }}
  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 32 kernel_size: 3 pad: 1 weight_filler {{ type: "msra" }} }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" }}
layer {{ name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param {{ bias_term: true }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "bn1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param {{ num_output: 64 kernel_size: 3 pad: 1 weight_filler {{ type: "msra" }} }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param {{ pool: AVE kernel_size: 2 stride: 2 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
"""
# The peak resident memory of the process's own image (VmHWM: what ru_maxrss reports, less
# the parent's peak that ru_maxrss carries over a fork and exec from the test process).
MEASURE = """
import sys
from pathlib import Path
from medtl.caffe_env import caffe

def peak():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

c = caffe()
c.set_mode_cpu()
before = peak()
solver = c.get_solver(sys.argv[1])
solver.step(3)
print(peak() - before)
"""


def _lmdb(path: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    writer = LmdbWriter(path)
    for rank in range(count):
        writer.put(rank, rng.integers(0, 256, (3, SIDE, SIDE), dtype=np.uint8), rank % 2)
    writer.close()
    return path


def _net(folder: Path, batch: int, source: Path) -> Path:
    path = folder / f"net_{batch}.prototxt"
    path.write_text(NET.format(source=source, batch=batch))
    solver = folder / f"solver_{batch}.prototxt"
    solver.write_text(f'net: "{path}"\nbase_lr: 0.001\nlr_policy: "fixed"\nmomentum: 0.9\n'
                      f'max_iter: 3\nsnapshot_after_train: false\nsolver_mode: CPU\n')
    return solver


def _measured(solver: Path) -> int:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(solver)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_the_estimate_is_within_a_factor_of_the_measured_peak(tmp_path):
    source = _lmdb(tmp_path / "lmdb", 300)
    measured, estimated = {}, {}
    for batch in (16, 96):
        solver = _net(tmp_path, batch, source)
        measured[batch] = _measured(solver)
        net = read_net(tmp_path / f"net_{batch}.prototxt")
        e = memory.estimate_training(net, None, (3, SIDE, SIDE), batch, 0, "SGD")
        estimated[batch] = e.total - memory.BASELINE_BYTES
        assert 0.5 < measured[batch] / estimated[batch] < 2, (batch, measured, estimated)
    growth = measured[96] - measured[16]
    assert 0.5 < growth / (estimated[96] - estimated[16]) < 2, (measured, estimated)


def _densenet(batch: int):
    cfg = next(c for c in configurations("boit2019") if c.id == "densenet121-boit_ft")
    b = assumed(batch, "a test")
    return replace(cfg, solver=replace(cfg.solver, batch_size=b, val_batch_size=b))


def test_densenet121_at_batch_16_is_estimated_near_the_10_8_gb_it_took():
    estimate = memory.estimate_run(_densenet(16))
    assert 10.8e9 / 1.5 < estimate.total < 10.8e9 * 1.5
    at_32 = memory.estimate_run(_densenet(32))
    assert at_32.total > 1.8 * estimate.total - estimate.fixed
    with pytest.raises(RunError, match=r"^cxr: training at batch 32 needs about \d+\.\d GB "
                                       r"\(estimated from the nets' blob shapes\), 16\.0 GB is "
                                       r"MemAvailable \(of which 90% may be used\); batch \d+ "
                                       r"would fit: set training\.batch_size$"):
        memory.check_fits(at_32, "cxr", available=16 * 10**9)
    memory.check_fits(estimate, "cxr", available=16 * 10**9)       # batch 16 fits


def test_check_fits_counts_the_runs_started_at_once():
    e = memory.MemoryEstimate(batch=10, val_batch=10, per_record=10**8, fixed=10**9,
                              val_bytes=10**9)
    assert e.total == 3 * 10**9 and e.largest_batch(4 * 10**9) == 20
    memory.check_fits(e, "x", available=34 * 10**8)                # 90% of it suffices
    with pytest.raises(RunError, match=r"needs about 3\.0 GB .* 3\.2 GB is MemAvailable "
                                       r"\(of which 90% may be used\); batch 8 would fit"):
        memory.check_fits(e, "x", available=32 * 10**8)
    with pytest.raises(RunError, match=r"needs about 6\.0 GB x 2 runs at once .* batch 2 "
                                       r"would fit.*; or lower parallel$"):
        memory.check_fits(e, "x", runs=2, available=5 * 10**9)
    with pytest.raises(RunError, match="no batch fits"):
        memory.check_fits(e, "x", available=10**9)


def test_meminfo_is_read(tmp_path):
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       32000000 kB\nMemAvailable:   2048 kB\n")
    assert memory.available_host_bytes(info) == 2048 * 1024
    assert memory.available_host_bytes(tmp_path / "none") is None


def test_medtl_run_stops_before_building_anything_when_the_batch_does_not_fit(
        results_root, tmp_path, monkeypatch, capsys):
    spec = tiny_ln_spec(tmp_path, training={"max_epochs": 1, "batch_size": 64})
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 50 * 2**20)
    assert cli.main(["run", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifarnet_ri: training at batch 64 needs about" in err[0]
    assert "0.1 GB is MemAvailable (of which 90% may be used); no batch fits" in err[0]
    assert not (results_root / "datasets").exists()                 # stopped before building
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    memory.check_plan_memory(None, [], 1)                           # nothing to run: no check
