"""`medtl run SPEC`: carry out every run of a validated plan, each once.

A run is a self-contained unit — the spec and a run id in, files out — so any executor can
carry it out. :func:`run_experiment` builds the spec's dataset as one Dask task, then gives
each run to a worker of a Dask cluster (`medtl.experiments.executor`: local by default, or a
scheduler's), which starts `python -m medtl run-one SPEC RUN_ID [--gpu G]` in a child
process; :func:`carry_out` claims the run folder (`medtl.locks`) for the child's lifetime.
A run folder holds

    run.json        the resolved settings (what makes the run stale when they change), the
                    provenance of every value, the spec's deviations, the data it read;
                    after training what it cost (`resources`: time, images/s, peak memory,
                    hardware; medtl.experiments.resources)
    run.log         everything the run printed, Caffe's log included
    net/, solver.prototxt, trace.csv, snapshots/, selected.caffemodel   (medtl.train.driver)
                    (snapshots/ goes once metrics.json is written, unless the spec's
                    training.keep_snapshots keeps its last pair: medtl.train.snapshots)
    predictions.csv the test outputs per sample (the study's evaluation)
    manifest.json   kit and Caffe versions, digests of data, weights and predictions
    metrics.json    the run's numbers; its presence marks the run finished
    failed.json     why the run failed (only `--retry-failed` runs it again)

Finished runs are never trained or written again; an interrupted one resumes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medtl import __version__, caffe_env, io
from medtl.datasets.integrity import DamagedDatabaseError, verify_sources
from medtl.errors import DiskFullError, MedtlError, OutputExistsError, RunError, one_line
from medtl.experiments import executor
from medtl.experiments.batch_progress import BatchProgress
from medtl.experiments.executor import watch_parent
from medtl.experiments.memory import PlanMemory
from medtl.experiments.plan import (
    FAILED,
    FINISHED,
    RUN_FILE,
    Plan,
    RunPlan,
    State,
    load_plan,
    run_settings,
    selection_for,
    with_overrides,
)
from medtl.experiments.pretrained import check_source_weights, initial_weights
from medtl.experiments.resources import measure, training_resources
from medtl.experiments.runlog import tee_output
from medtl.experiments.study import FoldData, RunInputs
from medtl.generate import DataPaths, RunPaths, configuration_files
from medtl.locks import ClaimedError, claim, describe, holder
from medtl.paths import shown, to_results
from medtl.protocols import Configuration
from medtl.provenance import Sourced
from medtl.solver import plan_solver
from medtl.surgery import weights_digest
from medtl.train.driver import TrainResult, TrainSpec, train
from medtl.train.snapshots import prune_snapshots

LOG = "run.log"
# A child that ends by one of these signals was interrupted (it resumes); by any other
# (Caffe's CHECK aborts, a crash) it failed.
INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP}
# `run-one`'s exit status when another process holds the run; it waits this long first (a
# run whose worker just died is released by its child within a few seconds)
CLAIMED = 3
CLAIM_WAIT_S = 60.0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------ one run

def _record(plan: Plan, run: RunPlan, fold: FoldData, gpu: int | None) -> dict[str, Any]:
    """run.json: the settings that define the run, then what it read and why."""
    cfg = with_overrides(run.config, plan.experiment)
    return {
        "settings": run_settings(plan, run),
        "dataset_key": plan.study.dataset_key,
        "label": cfg.label, "spec": shown(plan.experiment.path),
        "provenance": {k: v.to_dict() for k, v in cfg.provenance().items()},
        "selection": selection_for(plan.experiment).to_dict(),
        "deviations": plan.experiment.deviations(),
        "dataset": {"dir": to_results(plan.study.dataset_dir),
                    "train": to_results(fold.train), "val": to_results(fold.val),
                    "test": to_results(fold.test), "train_size": fold.train_size,
                    "val_size": fold.val_size, "test_size": fold.test_size,
                    "manifest_sha256": fold.manifest_sha256},
        "device": "CPU" if gpu is None else f"GPU {gpu}",
        "blas_threads": blas_threads(),
        "medtl_version": __version__,
    }


def blas_threads() -> str:
    """The BLAS threads of this process (OpenBLAS's sums depend on it)."""
    for key in executor.BLAS_ENV:
        if os.environ.get(key):
            return os.environ[key]
    return "OpenBLAS's default (every core)"


def _write_nets(plan: Plan, run: RunPlan, fold: FoldData, gpu: int | None):
    """The run's nets and solver (regenerated identically on resume); returns the plan of
    the solver and its paths."""
    cfg = with_overrides(run.config, plan.experiment)
    run_dir = run.run_dir
    solver_plan = plan_solver(cfg.solver, fold.train_size, fold.val_size)
    paths = RunPaths(net_dir=str(run_dir / "net"), solver_file=str(run_dir / "solver.prototxt"),
                     data=DataPaths(fold.train, fold.val, fold.mean_file, fold.backend,
                                    fold.mean_value, fold.scale),
                     snapshot_prefix=str(run_dir / "snapshots" / "caffe"))
    seed = Sourced(run.seed, source=f"experiment spec seeds ({plan.experiment.path.name})")
    files = configuration_files(cfg, paths, solver_plan, seed=seed,
                                gpu=gpu is not None)
    for rel, text in files.items():
        path = Path(rel)
        if not path.is_file() or path.read_text() != text:
            io.write_text(path, text)
    return cfg, solver_plan, paths


def _check_runnable(plan: Plan, run: RunPlan) -> State:
    """The run's state, when it may be carried out (to run) or is done (finished); a stale
    or failed run is refused with what to do."""
    state = plan.state(run)
    spec = shown(plan.experiment.path)
    if state.state is State.STALE:
        raise OutputExistsError(f"{run.run_dir} holds a run made under other settings "
                                f"({state.detail}); it is never overwritten: `medtl run "
                                f"{spec} --rerun-stale` moves it aside")
    if state.state is State.FAILED:
        raise RunError(f"{run.run_dir}: failed earlier ({state.detail}); `medtl run {spec} "
                       "--retry-failed` runs it again")
    return state.state


def run_one(plan: Plan, run: RunPlan, *, progress: bool = True,
            gpu: int | None = None) -> dict[str, Any]:
    """Carry out one run (or finish an interrupted one) on `gpu` (None: the spec's
    training.gpu, which is None for the CPU); returns its metrics."""
    run_dir = run.run_dir
    if _check_runnable(plan, run) is State.FINISHED:
        return json.loads((run_dir / FINISHED).read_text())
    experiment, study = plan.experiment, plan.study
    gpu = experiment.training.gpu if gpu is None else gpu
    fold = study.fold_data_for(run.config, run.fold, run.fraction, run.seed)
    for note in verify_sources(fold.train, fold.val, fold.test):   # before Caffe opens them
        print(f"note: {note}")
    run_dir.mkdir(parents=True, exist_ok=True)
    io.clean_stale_temps(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        io.write_json(run_dir / RUN_FILE, _record(plan, run, fold, gpu))
    cfg, solver_plan, paths = _write_nets(plan, run, fold, gpu)

    initial = None
    if cfg.policy.init.value == "pretrained":
        initial = initial_weights(experiment, cfg, run_dir / "net" / "train.prototxt",
                                  run_dir / "init.caffemodel", seed=run.seed,
                                  progress=progress)
    with measure(gpu) as usage:
        if cfg.policy.first_learning.value == "none":
            result = _untrained(initial, run_dir)
        else:
            result = train(TrainSpec(
                solver=Path(paths.solver_file), run_dir=run_dir,
                iters_per_epoch=solver_plan.iters_per_epoch.value,
                max_epochs=cfg.solver.max_epochs.value,
                val_records=solver_plan.val_size,
                selection=selection_for(experiment).value,
                positive_classes=study.positive_classes, weights=initial, gpu=gpu,
                chance_loss=chance_loss(cfg), progress=progress))
    _record_resources(run_dir, training_resources(usage, result.trace,
                                                  cfg.solver.batch_size.value,
                                                  result.resumed_from_epoch))

    metrics = study.evaluate(RunInputs(cfg, fold, result.selected_weights, initial, run_dir,
                                       run.seed, gpu))
    metrics["selected_epoch"] = result.selected_epoch
    metrics["selection"] = {result.selection: result.selected_value}
    predictions = run_dir / "predictions.csv"
    io.write_json(run_dir / "manifest.json", {
        "medtl_version": __version__, "caffe": caffe_env.build_info(),
        "dataset_manifest_sha256": fold.manifest_sha256,
        "initial_weights_digest": weights_digest(initial) if initial else None,
        "selected_weights_digest": weights_digest(result.selected_weights),
        "predictions_sha256": io.sha256_file(predictions) if predictions.is_file() else None,
        "resumed_from_epoch": result.resumed_from_epoch,
        "finished_at": _now(),
    })
    io.write_json(run_dir / FINISHED, metrics)
    prune_snapshots(run_dir, run_dir / FINISHED, keep_last=experiment.training.keep_snapshots)
    return metrics


def _record_resources(run_dir: Path, resources: dict[str, Any]) -> None:
    """Add what training cost (`medtl.experiments.resources`) to run.json; its settings, which
    decide whether the run is stale, stay as written."""
    record = json.loads((run_dir / RUN_FILE).read_text())
    record["resources"] = resources
    io.write_json(run_dir / RUN_FILE, record)


def chance_loss(cfg: Configuration) -> float:
    """Loss per head of a net that outputs chance: ln K for a K-way softmax, K ln 2 for K
    sigmoid outputs."""
    k = cfg.num_classes.value
    return math.log(k) if cfg.loss == "softmax" else k * math.log(2)


def _untrained(initial: Path | None, run_dir: Path) -> TrainResult:
    """A policy under which nothing learns (Ravishankar's NA): its weights are the start."""
    if initial is None:
        raise RunError(f"{run_dir}: a policy that trains nothing needs pretrained weights")
    selected = io.copy_file(initial, run_dir / "selected.caffemodel")
    return TrainResult(selected_epoch=0, selected_value=float("nan"), selection="none",
                       epochs_run=0, resumed_from_epoch=0, selected_weights=selected,
                       trace=run_dir / "trace.csv")


def record_failure(run_dir: Path, reason: str, error: str) -> None:
    """failed.json: why the run failed (`error`: the kind of error, e.g. DivergenceError,
    a signal that killed the run, or "bug: <exception>")."""
    run_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(run_dir / FAILED, {"reason": reason, "error": error, "at": _now(),
                                     "log": LOG})


def carry_out(spec_path: Path, run_id: str, *, progress: bool = True,
              gpu: int | None = None, wait_s: float = CLAIM_WAIT_S) -> int:
    """`medtl run-one`: one run with its output in run.log and its failure, if any, in
    failed.json. Returns the exit status: 0 done, 2 a reported error, 1 a bug (traceback),
    CLAIMED when another process holds the run (after waiting `wait_s` seconds for it)."""
    plan = load_plan(spec_path)
    run = plan.run(run_id)
    if _check_runnable(plan, run) is State.FINISHED:      # its folder is left untouched
        print(f"{run_id}: finished earlier")
        return 0
    try:
        with claim(run.run_dir, f"run {run_id}", wait_s=wait_s):
            return _carry_out_claimed(plan, run, progress, gpu)
    except ClaimedError as exc:
        print(f"{run_id}: not run here: {one_line(exc)}", file=sys.stderr)
        return CLAIMED


def _carry_out_claimed(plan: Plan, run: RunPlan, progress: bool, gpu: int | None) -> int:
    if _check_runnable(plan, run) is State.FINISHED:      # finished while we waited
        print(f"{run.run_id}: finished by another process")
        return 0
    with tee_output(run.run_dir / LOG, f"medtl run-one {shown(plan.experiment.path)} "
                                       f"{run.run_id}"):
        watch_parent(lambda line: print(f"{run.run_id}: {line}; the run resumes from its "
                                        "last snapshot when run again", flush=True))
        try:
            metrics = run_one(plan, run, progress=progress, gpu=gpu)
        except MedtlError as exc:
            # a full disk or a damaged dataset is no fault of the run: no failure record,
            # a rerun resumes it once there is space or the dataset is built again
            if plan.state(run).state is State.TO_RUN \
                    and not isinstance(exc, (DiskFullError, DamagedDatabaseError)):
                record_failure(run.run_dir, one_line(exc), type(exc).__name__)
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:
            record_failure(run.run_dir, f"{type(exc).__name__}: {one_line(exc)} (a bug in "
                           "the kit: the traceback is in run.log)", f"bug: {type(exc).__name__}")
            traceback.print_exc()
            return 1
        print(f"{run.run_id}: finished; selected epoch {metrics['selected_epoch']}")
    return 0


# ------------------------------------------------------------------ the batch

def _aside(run: RunPlan) -> Path:
    """Move a stale run's folder to `<results>/<paper>/<spec>/stale/<id>.<time>` (kept)."""
    dest = run.experiment.results_dir / "stale" / f"{run.run_id}.{time.strftime('%Y%m%dT%H%M%S')}"
    return io.move_aside(run.run_dir, dest)


def _retire_failure(run: RunPlan) -> None:
    """Keep the failure record as failures/<time>.json and let the run resume."""
    failed = run.run_dir / FAILED
    io.move_aside(failed, run.run_dir / "failures" / f"{time.strftime('%Y%m%dT%H%M%S')}.json")


def _outcome(run: RunPlan | SimpleNamespace, returncode: int) -> str:
    """What a `run-one` child's exit status means (a failure record is written for a
    crash)."""
    if returncode == 0:
        return "done"
    failed = run.run_dir / FAILED
    if returncode < 0:
        sig = signal.Signals(-returncode)
        if sig in INTERRUPTS:
            return f"interrupted ({sig.name}); rerun to resume"
        record_failure(run.run_dir, f"the run died of {sig.name} (Caffe aborts this way on "
                       f"a CHECK failure); see {shown(run.run_dir / LOG)}", sig.name)
    if failed.is_file():
        return f"failed: {json.loads(failed.read_text())['reason']}"
    return f"failed (exit {returncode}); see {shown(run.run_dir / LOG)}"


def run_one_command(spec: str, run_id: str, gpu: int | None) -> list[str]:
    """`medtl run-one` of a run, on `gpu` (None: the spec's device)."""
    cmd = [sys.executable, "-m", "medtl", "run-one", spec, run_id, "--no-progress"]
    return cmd + ([] if gpu is None else ["--gpu", str(gpu)])


def run_in_worker(spec: str, run_id: str, run_dir: str) -> str:
    """A run as a Dask task: `medtl run-one` in a child process pinned to the worker's GPU;
    returns the run's outcome."""
    code = executor.spawn(run_one_command(spec, run_id, executor.worker_gpu())).wait()
    if code == CLAIMED:
        return f"running elsewhere: claimed by {describe(holder(Path(run_dir)))}"
    return _outcome(SimpleNamespace(run_dir=Path(run_dir)), code)


def prepare_in_worker(spec: str, progress: bool) -> str:
    """The spec's dataset, built once (as a Dask task, before the runs)."""
    plan = load_plan(Path(spec))
    plan.study.prepare(progress=progress)
    return str(plan.study.dataset_dir)


@dataclass(frozen=True)
class Resources:
    """Where a batch runs: `workers` local slots (default: sized to the machine), `gpus`
    (None: --gpus absent, then MEDTL_GPUS, then the spec's training.gpu), `runs_per_gpu`,
    or the Dask cluster at `scheduler`."""

    workers: int | None = None
    gpus: str | None = None
    runs_per_gpu: int = 1
    scheduler: str | None = None


def _slots(plan: Plan, todo: list[RunPlan], resources: Resources,
           memory: PlanMemory) -> list[executor.Slot]:
    """The local cluster's workers (none: a remote cluster's workers are its own)."""
    if resources.scheduler is not None:
        return []
    gpus = executor.gpus_from(resources.gpus)
    if not gpus and plan.experiment.training.gpu is not None:
        gpus = (plan.experiment.training.gpu,)
    workers = resources.workers or plan.experiment.spec.parallel
    if workers is None and not gpus:
        workers = min(executor.cores(), len(todo),
                      memory.runs_at_once() or executor.cores())
    return executor.plan_slots(gpus=gpus, runs_per_gpu=resources.runs_per_gpu,
                               workers=workers, runs=len(todo))


def run_experiment(spec_path: Path, *, parallel: int | None = None, progress: bool = True,
                   rerun_stale: bool = False, retry_failed: bool = False,
                   resources: Resources | None = None) -> dict[str, str]:
    """Run every run of a spec that is not finished, on a Dask cluster; returns run id ->
    outcome ("done", "finished earlier", "failed: ...", "interrupted ...", "running
    elsewhere: ...")."""
    plan = load_plan(spec_path)
    status, todo = _triage(plan, rerun_stale, retry_failed)
    exp = plan.experiment
    print(f"{exp.spec.paper}/{exp.path.stem}: {len(plan.runs)} runs, "
          f"{sum(v == 'finished earlier' for v in status.values())} finished earlier, "
          f"{len(todo)} to run", flush=True)
    if not todo:
        return status
    resources = resources or Resources(workers=parallel)
    memory = PlanMemory(plan, todo)
    slots = _slots(plan, todo, resources, memory)
    check_source_weights(plan.experiment, [run.config for run in todo])
    if slots:
        per_device = len([s for s in slots if s.gpu == slots[0].gpu])
        memory.check(per_device, gpu=slots[0].gpu)
    status.update(_execute(plan, todo, slots, resources.scheduler, progress))
    return status


def _triage(plan: Plan, rerun_stale: bool, retry_failed: bool
            ) -> tuple[dict[str, str], list[RunPlan]]:
    """The outcome of runs with nothing to do, and the runs to carry out (stale ones moved
    aside, failed ones retired when asked)."""
    states = {run.run_id: plan.state(run) for run in plan.runs}
    stale = [run for run in plan.runs if states[run.run_id].state is State.STALE]
    if stale and not rerun_stale:
        listed = "; ".join(f"{r.run_id}: {states[r.run_id].detail}" for r in stale[:3])
        raise RunError(f"{plan.experiment.path}: {len(stale)} run(s) were made under other "
                       f"settings ({listed}{' ...' if len(stale) > 3 else ''}); they are never "
                       "mixed into results: `--rerun-stale` moves them aside and runs them "
                       "again")
    status: dict[str, str] = {}
    todo = []
    for run in plan.runs:
        state = states[run.run_id]
        if state.state is State.STALE:
            print(f"  moved aside (stale): {shown(_aside(run))}", flush=True)
        elif state.state is State.FAILED and retry_failed:
            _retire_failure(run)
        elif state.state is State.FAILED:
            status[run.run_id] = f"failed earlier: {state.detail} (--retry-failed)"
            continue
        elif state.state is State.FINISHED:
            status[run.run_id] = "finished earlier"
            continue
        elif state.state is State.RUNNING:
            status[run.run_id] = f"running elsewhere: {state.detail}"
            continue
        todo.append(run)
    return status, todo


def _execute(plan: Plan, todo: list[RunPlan], slots: list[executor.Slot],
             scheduler: str | None, progress: bool) -> dict[str, str]:
    spec = str(plan.experiment.path)
    where = scheduler or (f"{len(slots)} local worker(s): "
                          + ", ".join(s.name for s in slots))
    view = BatchProgress(plan, todo, enabled=progress)
    with executor.cluster(slots, scheduler=scheduler, dashboard=progress) as client:
        link = executor.dashboard_link(client)
        print(f"  Dask cluster: {where}" + (f"; dashboard {link}" if link else ""), flush=True)
        built = plan.study.prepared_path is None and plan.study.is_built()
        prepare = None if built else executor.Task(
            f"prepare-{plan.study.dataset_dir.name}", prepare_in_worker, (spec, progress))
        tasks = [executor.Task(run.run_id, run_in_worker, (spec, run.run_id, str(run.run_dir)),
                               {"slot": 1}) for run in todo]
        try:
            results = executor.execute(client, tasks, upstream=prepare,
                                       on_done=lambda t, r: view.done(t.key, _as_outcome(r)),
                                       tick=view.tick)
        finally:
            view.close()
    return {key: _as_outcome(result) for key, result in results.items()}


def _as_outcome(result: Any) -> str:
    if isinstance(result, str):
        return result
    if type(result).__name__ == "KilledWorker":
        return (f"interrupted: its worker died {executor.ALLOWED_FAILURES + 1} times (killed, "
                "or out of memory); rerun to resume")
    return f"failed: {type(result).__name__}: {one_line(result)} (a bug in the kit)"
