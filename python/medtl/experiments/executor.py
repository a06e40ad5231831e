"""Where a batch's runs execute: a Dask distributed cluster, local by default.

The batch (`medtl.experiments.runner`) hands this module tasks; it knows nothing of runs.

- Local (the default): a cluster of one worker process per *slot*, sized to the machine
  (:func:`plan_slots`). A slot is one run at a time, pinned to a GPU when GPUs are given
  (`--gpus 0,1`, or `MEDTL_GPUS`), several slots per GPU with `runs_per_gpu`. A CPU slot gets
  its share of the cores as BLAS threads.
- Remote: `--scheduler ADDRESS` joins a running Dask cluster (e.g. dask-jobqueue on SLURM,
  docs/cluster.md); its workers say which GPU they drive through `MEDTL_WORKER_GPU`.

A task runs its work in a child process (:func:`spawn`), which stops when the worker that
started it dies (:func:`watch_parent`); the scheduler then gives the task to another worker
(up to ALLOWED_FAILURES worker deaths per task), where the run resumes from its last snapshot.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from medtl.errors import ConfigError

GPUS_ENV = "MEDTL_GPUS"
WORKER_GPU_ENV = "MEDTL_WORKER_GPU"
PARENT_ENV = "MEDTL_PARENT_PID"
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# a task whose worker died this many times is given up (Dask's allowed-failures)
ALLOWED_FAILURES = 3
POLL_S = 0.5
DASHBOARD = ":8787"       # taken: Dask picks a free port and the link says which


# ------------------------------------------------------------------ slots

@dataclass(frozen=True)
class Slot:
    """One worker of the local cluster: one run at a time, on `gpu` (None: the CPU)."""

    name: str
    gpu: int | None
    blas_threads: int

    def env(self) -> dict[str, str]:
        """The worker's environment: its GPU, and its BLAS threads unless the user set them
        (OpenBLAS's sums depend on its thread count: runs with the same count, e.g. one
        each whenever there are as many runs as cores, give the same numbers on any machine)."""
        env = {WORKER_GPU_ENV: "" if self.gpu is None else str(self.gpu)}
        if not any(os.environ.get(key) for key in BLAS_ENV):
            env.update(dict.fromkeys(BLAS_ENV, str(self.blas_threads)))
        return env


def parse_gpus(text: str | None, where: str) -> tuple[int, ...]:
    """GPU ids from "0,1,3" (None or blank: none); ConfigError naming `where` otherwise."""
    if text is None or not text.strip():
        return ()
    try:
        gpus = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{where}: expected GPU ids like 0,1,2, got {text!r}") from None
    if min(gpus) < 0 or len(set(gpus)) != len(gpus):
        raise ConfigError(f"{where}: GPU ids must be distinct and >= 0, got {text!r}")
    return gpus


def gpus_from(option: str | None) -> tuple[int, ...]:
    """`--gpus`, else MEDTL_GPUS, else none."""
    if option is not None:
        return parse_gpus(option, "--gpus")
    return parse_gpus(os.environ.get(GPUS_ENV), GPUS_ENV)


def plan_slots(*, gpus: Sequence[int] = (), runs_per_gpu: int = 1, workers: int | None = None,
               cores: int | None = None, runs: int | None = None) -> list[Slot]:
    """The local cluster's workers. With GPUs: `runs_per_gpu` slots on each (`workers`, if
    given, must not ask for more). On the CPU: `workers` slots (default: one per core, at
    most `runs`), the cores shared among them as BLAS threads."""
    cores = cores or os.cpu_count() or 1
    if gpus:
        slots = [Slot(f"gpu{g}-{k}", g, 1) for k in range(runs_per_gpu) for g in gpus]
        if workers is not None and workers > len(slots):
            raise ConfigError(f"--workers {workers}: {len(gpus)} GPU(s) x {runs_per_gpu} "
                              f"run(s) per GPU give {len(slots)} slots")
        return slots[:workers] if workers else slots
    n = workers or max(1, min(cores, runs or cores))
    threads = max(1, cores // n)
    return [Slot(f"cpu-{i}", None, threads) for i in range(n)]


# ------------------------------------------------------------------ the cluster

def _local_cluster(slots: Sequence[Slot], dashboard: str | None):
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {s.name: {"cls": Nanny, "options": {
        "nthreads": 1, "env": s.env(), "memory_limit": 0, "name": s.name,
        "resources": {"slot": 1, **({"GPU": 1} if s.gpu is not None else {})}}}
        for s in slots}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": dashboard}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.CRITICAL,
                       name="medtl")


@contextmanager
def cluster(slots: Sequence[Slot], *, scheduler: str | None = None,
            dashboard: bool = True) -> Iterator[Any]:
    """A Dask client: on a new local cluster of `slots`, or on the cluster at `scheduler`."""
    import dask
    from distributed import Client

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.worker.daemon": False,
                          "distributed.admin.system-monitor.gil.enabled": False}):
        if scheduler is not None:
            with Client(scheduler) as client:
                yield client
            return
        # read by the worker processes as they start: the batch prints what matters
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
        with warnings.catch_warnings():     # "port 8787 is in use": the link names the port
            warnings.simplefilter("ignore", UserWarning)
            local = _local_cluster(slots, DASHBOARD if dashboard else None)
        with local, Client(local) as client:
            yield client


def dashboard_link(client) -> str | None:
    try:
        return client.dashboard_link
    except Exception:   # no bokeh, or a scheduler without a dashboard
        return None


# ------------------------------------------------------------------ inside a task

def worker_gpu() -> int | None:
    """The GPU the worker running this task drives (None: the CPU)."""
    text = os.environ.get(WORKER_GPU_ENV, "")
    return int(text) if text.strip() else None


def spawn(cmd: Sequence[str], *, quiet: bool = True) -> subprocess.Popen:
    """Start a task's child process; it stops if this process dies (:func:`watch_parent`)."""
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(list(cmd), env=env, stdout=out, stderr=out)


def watch_parent(say: Callable[[str], None], poll_s: float = 1.0) -> None:
    """In a child started by :func:`spawn`: when the parent dies, say so and stop (SIGTERM
    to this process) instead of training on unobserved."""
    text = os.environ.get(PARENT_ENV)
    if not text:
        return
    parent = int(text)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        say(f"the process that started this one (pid {parent}) is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="medtl-watch-parent", daemon=True).start()


# ------------------------------------------------------------------ running tasks

@dataclass
class Task:
    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    resources: dict[str, float] = field(default_factory=dict)


def execute(client, tasks: Sequence[Task], *, upstream: Task | None = None,
            on_done: Callable[[Task, Any], None] | None = None,
            tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run `upstream` (on a worker; its error is raised here), then `tasks`; returns key ->
    result. A task's error, or KilledWorker when its workers died more than ALLOWED_FAILURES
    times, is its result. `tick` is called about once a second."""
    if upstream is not None:     # its error (e.g. a bad source file) stops the batch
        client.submit(upstream.fn, *upstream.args, key=upstream.key, pure=False,
                      resources=upstream.resources or None).result()
    futures = {client.submit(task.fn, *task.args, key=task.key, pure=False,
                             resources=task.resources or None): task for task in tasks}
    results: dict[str, Any] = {}
    pending = set(futures)
    while pending:
        done = {future for future in pending if future.done()}
        pending -= done
        for future in done:
            task = futures[future]
            results[task.key] = _result(future)
            if on_done:
                on_done(task, results[task.key])
        if tick:
            tick()
        if pending and not done:
            time.sleep(POLL_S)
    return results


def _result(future) -> Any:
    try:
        return future.result()
    except Exception as exc:     # the task's own error, or KilledWorker
        return exc


def cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
