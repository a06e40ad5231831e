"""Batches on the local Dask cluster that train (slow): two launches on one spec train each
run once; a run whose worker is killed is completed, equal to an undisturbed one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spec_helpers import tiny_ln_spec

from medtl.experiments.plan import load_plan

pytestmark = pytest.mark.slow


def _launch(spec: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medtl", "run", str(spec), "--no-progress",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _epochs(run_dir: Path) -> list[int]:
    trace = run_dir / "trace.csv"
    if not trace.is_file():
        return []
    return [int(line.split(",")[0]) for line in trace.read_text().splitlines()[1:] if line]


def test_two_launches_on_one_spec_build_and_train_everything_once(results_root, tmp_path):
    spec = tiny_ln_spec(tmp_path, seeds=[1, 2], training={"max_epochs": 3})
    launches = [_launch(spec) for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outputs
    assert sum("waiting for dataset" in out for out in outputs) == 1
    for run in load_plan(spec).runs:
        assert _epochs(run.run_dir) == [1, 2, 3]                 # never trained twice
        assert (run.run_dir / "run.log").read_text().count("===== ") == 1


def _worker_of(spec: Path, run_id: str) -> int | None:
    """The Dask worker process whose child trains `run_id`."""
    found = subprocess.run(["pgrep", "-f", f"run-one {spec} {run_id}"], capture_output=True,
                           text=True).stdout.split()
    if not found:
        return None
    return int(Path(f"/proc/{found[0]}/stat").read_text().split(") ")[1].split()[1])


def _kill_worker_after_first_epoch(spec: Path, run_dir: Path, run_id: str) -> int:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if _epochs(run_dir):
            worker = _worker_of(spec, run_id)
            if worker:
                os.kill(worker, signal.SIGKILL)
                return worker
        time.sleep(0.2)
    raise AssertionError("the run never finished an epoch")


def test_a_run_whose_worker_is_killed_is_completed_as_if_undisturbed(results_root, tmp_path):
    calm = tiny_ln_spec(tmp_path / "calm", training={"max_epochs": 4})
    rough = tiny_ln_spec(tmp_path / "rough", name="rough", training={"max_epochs": 4})
    assert _launch(calm, "--workers", "1").wait(timeout=900) == 0
    batch = _launch(rough, "--workers", "1")
    run = load_plan(rough).runs[0]
    _kill_worker_after_first_epoch(rough, run.run_dir, run.run_id)
    output = batch.communicate(timeout=900)[0]
    assert batch.returncode == 0, output
    assert f"done  {run.run_id}" in output
    log = (run.run_dir / "run.log").read_text()
    assert "resuming after epoch" in log
    undisturbed = load_plan(calm).runs[0].run_dir
    assert _epochs(run.run_dir) == _epochs(undisturbed) == [1, 2, 3, 4]
    digest = [json.loads((d / "manifest.json").read_text())["selected_weights_digest"]
              for d in (undisturbed, run.run_dir)]
    assert digest[0] == digest[1]
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (undisturbed, run.run_dir)]
    assert metrics[0] == metrics[1]
