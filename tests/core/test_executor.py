"""The batch executor's parts, without training: GPU slots and their pinning on a real local
Dask cluster, claims across processes, children that stop with their parent, the SLURM job
script of a GPU worker, and a dataset two processes ask for at once."""

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

from medtl.errors import ConfigError
from medtl.experiments import executor, jobqueue
from medtl.experiments.plan import State, load_plan
from medtl.experiments.runner import run_one_command
from medtl.locks import ClaimedError, claim, holder

REPO = Path(__file__).resolve().parents[2]
SLURM_EXAMPLE = REPO / "scripts" / "cluster" / "slurm_gpu.yaml"


def _python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            **kwargs)


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------ GPUs and slots

def test_gpu_ids_come_from_the_option_else_MEDTL_GPUS_and_bad_ones_name_their_source(
        monkeypatch):
    monkeypatch.setenv("MEDTL_GPUS", "2,3")
    assert executor.gpus_from(None) == (2, 3)
    assert executor.gpus_from("0,1,2,3") == (0, 1, 2, 3)
    monkeypatch.setenv("MEDTL_GPUS", "")
    assert executor.gpus_from(None) == ()
    with pytest.raises(ConfigError, match=r"^--gpus: .*'0,a'"):
        executor.gpus_from("0,a")
    monkeypatch.setenv("MEDTL_GPUS", "1,1")
    with pytest.raises(ConfigError, match=r"^MEDTL_GPUS: .*distinct"):
        executor.gpus_from(None)


def test_each_gpu_gets_its_own_slots_and_cpu_slots_share_the_cores(monkeypatch):
    for key in executor.BLAS_ENV:
        monkeypatch.delenv(key, raising=False)
    slots = executor.plan_slots(gpus=(0, 1, 2, 3))
    assert [s.gpu for s in slots] == [0, 1, 2, 3]
    two_each = executor.plan_slots(gpus=(0, 1), runs_per_gpu=2)
    assert sorted(s.gpu for s in two_each) == [0, 0, 1, 1]
    assert len({s.name for s in two_each}) == 4
    assert [s.gpu for s in executor.plan_slots(gpus=(5, 7), workers=1)] == [5]
    with pytest.raises(ConfigError, match="--workers 3: 2 GPU"):
        executor.plan_slots(gpus=(0, 1), workers=3)
    cpu = executor.plan_slots(cores=8, workers=2)
    assert [(s.gpu, s.blas_threads) for s in cpu] == [(None, 4), (None, 4)]
    assert len(executor.plan_slots(cores=8, runs=3)) == 3          # no idle workers
    assert cpu[0].env()["OPENBLAS_NUM_THREADS"] == "4"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")            # the user's choice stands
    assert "OPENBLAS_NUM_THREADS" not in cpu[0].env()


def _pinned(seconds: float) -> tuple[str, int | None, float, float]:
    from distributed import get_worker

    start = time.time()
    time.sleep(seconds)          # held, so that the runs overlap
    return get_worker().name, executor.worker_gpu(), start, time.time()


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_every_worker_of_a_local_gpu_cluster_drives_its_own_gpu():
    slots = executor.plan_slots(gpus=(0, 1, 2, 3))
    tasks = [executor.Task(f"run{i}", _pinned, (2.0,), {"slot": 1}) for i in range(8)]
    with executor.cluster(slots, dashboard=False) as client:
        results = list(executor.execute(client, tasks).values())
    by_worker = {name: gpu for name, gpu, _, _ in results}
    assert by_worker == {s.name: s.gpu for s in slots}     # every worker used, each its GPU
    # one run per GPU at a time: four at once, never more
    assert _most_at_once([(a, b) for _, _, a, b in results]) == 4


def test_a_run_on_a_gpu_worker_is_started_on_that_gpu():
    command = run_one_command("spec.yaml", "a_run", gpu=2)
    assert command[-2:] == ["--gpu", "2"] and "run-one" in command
    assert "--gpu" not in run_one_command("spec.yaml", "a_run", gpu=None)


# ------------------------------------------------------------------ claims

HOLD = """
import sys, time
from pathlib import Path
from medtl.locks import claim
with claim(Path(sys.argv[1]), "the thing"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_claim_names_its_holder_and_is_released_when_the_holder_dies(tmp_path):
    target = tmp_path / "run"
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        assert holder(target)["pid"] == other.pid
        with pytest.raises(ClaimedError, match=f"the thing is claimed by pid {other.pid} on "), \
                claim(target, "the thing", wait_s=0.5):
            pass
    finally:
        other.kill()
        other.wait()
    assert holder(target) is None
    with claim(target, "the thing", wait_s=0):      # the kernel dropped the dead one's lock
        assert holder(target)["pid"] == os.getpid()
    assert holder(target) is None


def test_a_run_claimed_by_another_process_is_listed_as_running(results_root, tmp_path):
    plan = load_plan(tiny_ln_spec(tmp_path))
    run = plan.runs[0]
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(run.run_dir)],
                             stdout=subprocess.PIPE, text=True)
    try:
        other.stdout.readline()
        state = plan.state(run)
        assert state.state is State.RUNNING and f"pid {other.pid}" in state.detail
    finally:
        other.kill()
        other.wait()
    assert plan.state(run).state is State.TO_RUN


# ------------------------------------------------------------------ children

PARENT = """
import sys, time
from medtl.experiments.executor import spawn
child = spawn([sys.executable, "-c", "import time\\n"
               "from medtl.experiments.executor import watch_parent\\n"
               "watch_parent(lambda line: print(line, flush=True), poll_s=0.2)\\n"
               "time.sleep(120)"], quiet=False)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_stops_and_says_so_when_the_process_that_started_it_is_killed():
    parent = _python(PARENT)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(child, within_s=10)
    assert "is gone: stopping" in parent.stdout.read()


# ------------------------------------------------------------------ batch systems

def test_the_slurm_job_script_of_a_gpu_worker_is_one_run_on_the_job_s_gpu():
    script = jobqueue.job_script("slurm", jobqueue.read_config(SLURM_EXAMPLE))
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH -p gpu" in lines
    assert "export MEDTL_WORKER_GPU=0" in lines
    worker = lines[-1]
    assert "distributed.cli.dask_worker" in worker and "--resources slot=1,GPU=1" in worker
    assert worker.startswith("/shared/medtl/.venv/bin/python ")


def test_a_cluster_config_that_is_not_a_mapping_is_named(tmp_path):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("- queue: gpu\n")
    with pytest.raises(Exception, match=f"^{bad}: expected a mapping"):
        jobqueue.read_config(bad)


# ------------------------------------------------------------------ datasets

PREPARE = """
import sys
from pathlib import Path
from medtl.experiments.plan import load_plan
load_plan(Path(sys.argv[1])).study.prepare(progress=False)
print("prepared", flush=True)
"""


def test_a_dataset_two_processes_ask_for_at_once_is_built_once(results_root, tmp_path):
    spec = tiny_ln_spec(tmp_path)
    both = [subprocess.Popen([sys.executable, "-c", PREPARE, str(spec)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err for _, err in outputs]
    assert sum("waiting for dataset" in out for out, _ in outputs) == 1
    datasets = [p for p in (results_root / "datasets").iterdir() if p.is_dir()
                and p.name.startswith("shin_ln_")]
    assert len(datasets) == 1
    manifest = json.loads((datasets[0] / "manifest.json").read_text())
    assert manifest
