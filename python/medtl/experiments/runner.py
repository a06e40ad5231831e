"""`medtl run SPEC`: carry out every run of a validated plan, each once.

A run is a self-contained unit — the spec and a run id in, files out — so any executor can
carry it out; locally :func:`run_experiment` launches `python -m medtl run-one SPEC RUN_ID`
processes, N at a time. A run folder holds

    run.json        the resolved settings (what makes the run stale when they change), the
                    provenance of every value, the spec's deviations, the data it read;
                    after training what it cost (`resources`: time, images/s, peak memory,
                    hardware; medtl.experiments.resources)
    run.log         everything the run printed, Caffe's log included
    net/, solver.prototxt, trace.csv, snapshots/, selected.caffemodel   (medtl.train.driver)
    predictions.csv the test outputs per sample (the study's evaluation)
    manifest.json   kit and Caffe versions, digests of data, weights and predictions
    metrics.json    the run's numbers; its presence marks the run finished
    failed.json     why the run failed (only `--retry-failed` runs it again)

Finished runs are never trained or written again; an interrupted one resumes.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from medtl import __version__, caffe_env, io
from medtl.datasets.integrity import DamagedDatabaseError, verify_sources
from medtl.errors import DiskFullError, MedtlError, OutputExistsError, RunError, one_line
from medtl.experiments.memory import check_plan_memory
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
from medtl.paths import shown, to_results
from medtl.protocols import Configuration
from medtl.provenance import Sourced
from medtl.solver import plan_solver
from medtl.surgery import weights_digest
from medtl.train.driver import TrainResult, TrainSpec, train

LOG = "run.log"
# A child that ends by one of these signals was interrupted (it resumes); by any other
# (Caffe's CHECK aborts, a crash) it failed.
INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------ one run

def _record(plan: Plan, run: RunPlan, fold: FoldData) -> dict[str, Any]:
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
        "device": "CPU" if plan.experiment.training.gpu is None
        else f"GPU {plan.experiment.training.gpu}",
        "medtl_version": __version__,
    }


def _write_nets(plan: Plan, run: RunPlan, fold: FoldData):
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
                                gpu=plan.experiment.training.gpu is not None)
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


def run_one(plan: Plan, run: RunPlan, *, progress: bool = True) -> dict[str, Any]:
    """Carry out one run (or finish an interrupted one); returns its metrics."""
    run_dir = run.run_dir
    if _check_runnable(plan, run) is State.FINISHED:
        return json.loads((run_dir / FINISHED).read_text())
    experiment, study = plan.experiment, plan.study
    gpu = experiment.training.gpu
    fold = study.fold_data_for(run.config, run.fold, run.fraction, run.seed)
    for note in verify_sources(fold.train, fold.val, fold.test):   # before Caffe opens them
        print(f"note: {note}")
    run_dir.mkdir(parents=True, exist_ok=True)
    io.clean_stale_temps(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        io.write_json(run_dir / RUN_FILE, _record(plan, run, fold))
    cfg, solver_plan, paths = _write_nets(plan, run, fold)

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


def carry_out(spec_path: Path, run_id: str, *, progress: bool = True) -> int:
    """`medtl run-one`: one run with its output in run.log and its failure, if any, in
    failed.json. Returns the exit status: 0 done, 2 a reported error, 1 a bug (traceback)."""
    plan = load_plan(spec_path)
    run = plan.run(run_id)
    if _check_runnable(plan, run) is State.FINISHED:      # its folder is left untouched
        print(f"{run_id}: finished earlier")
        return 0
    with tee_output(run.run_dir / LOG, f"medtl run-one {shown(spec_path)} {run_id}"):
        try:
            metrics = run_one(plan, run, progress=progress)
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
        print(f"{run_id}: finished; selected epoch {metrics['selected_epoch']}")
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


def _launch(plan: Plan, run: RunPlan, quiet: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medtl", "run-one", str(plan.experiment.path), run.run_id]
    if quiet:
        cmd.append("--no-progress")
    out = subprocess.DEVNULL if quiet else None       # run.log has it all
    return subprocess.Popen(cmd, stdout=out, stderr=out)


def _outcome(run: RunPlan, returncode: int) -> str:
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


def run_experiment(spec_path: Path, *, parallel: int | None = None, progress: bool = True,
                   rerun_stale: bool = False, retry_failed: bool = False) -> dict[str, str]:
    """Run every run of a spec that is not finished; returns run id -> outcome."""
    plan = load_plan(spec_path)
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
        todo.append(run)
    exp = plan.experiment
    print(f"{exp.spec.paper}/{exp.path.stem}: {len(plan.runs)} runs, "
          f"{sum(v == 'finished earlier' for v in status.values())} finished earlier, "
          f"{len(todo)} to run", flush=True)
    workers = parallel or exp.spec.parallel
    if todo:
        check_source_weights(plan.experiment, [run.config for run in todo])
        check_plan_memory(plan, todo, workers)
        plan.study.prepare(progress=progress)
    quiet = not progress or workers > 1
    running: list[tuple[RunPlan, subprocess.Popen]] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < workers:
            run = queue.pop(0)
            print(f"  start {run.run_id}", flush=True)
            running.append((run, _launch(plan, run, quiet)))
        time.sleep(0.2)
        for run, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((run, proc))
            status[run.run_id] = _outcome(run, proc.returncode)
            verb = "done " if proc.returncode == 0 else "FAILED"
            print(f"  {verb} {run.run_id}"
                  + ("" if proc.returncode == 0 else f": {status[run.run_id]}"), flush=True)
    return status
