"""`medtl run SPEC`: expand a study into runs and carry each one out, once.

A run is a self-contained unit — its resolved spec in, files out — so any executor can carry it
out; locally `run_experiment` launches `python -m medtl run-one SPEC RUN_ID` processes, N at a
time. A run directory holds `run.json` (the resolved run), the generated nets and solver, the
training trace and snapshots (medtl.train.driver), `selected.caffemodel`, `predictions.csv`,
`manifest.json` and finally `metrics.json`, whose presence marks the run finished: a finished
run is never trained or written again, an unfinished one resumes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medtl import __version__, caffe_env
from medtl.datasets.atomic import OutputExistsError
from medtl.datasets.manifest import sha256_file
from medtl.experiments.datasets import FoldData, adapter_for
from medtl.experiments.spec import FINISHED, Experiment, RunPlan, expand, load_experiment
from medtl.generate import DataPaths, RunPaths, configuration_files
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, val_net
from medtl.protocols import Configuration
from medtl.prototxt import write_text
from medtl.provenance import Sourced, assumed, paper
from medtl.solver import SolverRecipe, plan_solver
from medtl.train.driver import TrainResult, TrainSpec, train

SELECTION = {"shin2016": paper("min_val_loss", "Shin 2016 Sec. IV-C: the snapshot with the "
                                              "lowest validation loss"),
             "tajbakhsh2016": paper("max_val_auc", "Tajbakhsh 2016 Sec. VI: training stopped "
                                                   "at the highest validation AUC (80/20)")}


class RunError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _deviation(value: Any, what: str) -> Sourced:
    return assumed(value, f"set by the experiment spec ({what}), not the paper's value")


def with_overrides(cfg: Configuration, experiment: Experiment) -> Configuration:
    """The configuration with the spec's training overrides, each marked as a deviation."""
    t = experiment.training
    solver: SolverRecipe = cfg.solver
    if t.max_epochs is not None:
        solver = replace(solver, max_epochs=_deviation(t.max_epochs, "training.max_epochs"))
    if t.batch_size is not None:
        batch = _deviation(t.batch_size, "training.batch_size")
        solver = replace(solver, batch_size=batch, val_batch_size=batch)
    policy = cfg.policy
    if t.base_lr is not None:
        base = _deviation(t.base_lr, "training.base_lr")
        policy = replace(policy, base_lr=base)
        solver = replace(solver, base_lr=base)
    return replace(cfg, solver=solver, policy=policy)


def selection_for(experiment: Experiment) -> Sourced:
    choice = experiment.training.selection
    if choice != "paper":
        return _deviation(choice, "training.selection")
    return SELECTION.get(experiment.spec.paper, assumed(
        "min_val_loss", "the paper gives no snapshot selection; lowest validation loss"))


def resolved_run(plan: RunPlan, fold: FoldData) -> dict[str, Any]:
    cfg = with_overrides(plan.config, plan.experiment)
    return {
        "run_id": plan.run_id, "paper": cfg.paper, "study": cfg.study, "label": cfg.label,
        "model": cfg.model, "policy": cfg.policy.name, "fold": plan.fold,
        "data_fraction": plan.fraction, "seed": plan.seed,
        "spec": str(plan.experiment.path),
        "dataset": {"builder": plan.experiment.dataset.builder,
                    "source": plan.experiment.dataset.source,
                    "train": fold.train, "val": fold.val, "test": fold.test,
                    "train_size": fold.train_size, "val_size": fold.val_size,
                    "test_size": fold.test_size, "manifest_sha256": fold.manifest_sha256},
        "provenance": {k: v.to_dict() for k, v in cfg.provenance().items()},
        "selection": selection_for(plan.experiment).to_dict(),
        "deviations": plan.experiment.deviations(),
    }


def _check_same_run(run_dir: Path, resolved: dict[str, Any]) -> None:
    existing = run_dir / "run.json"
    if existing.is_file():
        before = json.loads(existing.read_text())
        if before != json.loads(json.dumps(resolved, sort_keys=True, default=str)):
            changed = sorted(k for k in resolved if before.get(k) != resolved[k])
            raise OutputExistsError(
                f"{run_dir} holds a run with different settings ({', '.join(changed)}); "
                "it is never overwritten: move it away or change the spec")
    else:
        _write_json(existing, resolved)


def run_one(plan: RunPlan, *, progress: bool = True) -> dict[str, Any]:
    """Carry out one run (or finish an interrupted one); returns its metrics."""
    run_dir = plan.run_dir
    if (run_dir / FINISHED).is_file():
        return json.loads((run_dir / FINISHED).read_text())
    experiment = plan.experiment
    adapter = adapter_for(experiment)
    model = get_model(plan.config.model)
    fold = adapter.fold_data(plan.fold, plan.fraction, plan.seed, model)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolved_run(plan, fold)
    _check_same_run(run_dir, resolved)

    cfg = with_overrides(plan.config, experiment)
    solver_plan = plan_solver(cfg.solver, fold.train_size, fold.val_size)
    paths = RunPaths(net_dir=str(run_dir / "net"), solver_file=str(run_dir / "solver.prototxt"),
                     data=DataPaths(fold.train, fold.val, fold.mean_file),
                     snapshot_prefix=str(run_dir / "snapshots" / "caffe"))
    seed = Sourced(plan.seed, source=f"experiment spec seeds ({experiment.path.name})")
    for rel, text in configuration_files(cfg, paths, solver_plan, seed=seed,
                                         gpu=experiment.training.gpu is not None).items():
        path = Path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)

    initial = None
    if cfg.policy.init.value == "pretrained":
        from medtl.experiments.pretrained import initial_weights

        initial = initial_weights(experiment, cfg, run_dir / "net" / "train.prototxt",
                                  run_dir / "init.caffemodel", seed=plan.seed,
                                  progress=progress)

    if cfg.policy.first_learning.value == "none":
        result = _untrained(initial, run_dir)
    else:
        result = train(TrainSpec(
            solver=Path(paths.solver_file), run_dir=run_dir,
            iters_per_epoch=solver_plan.iters_per_epoch.value,
            max_epochs=cfg.solver.max_epochs.value, val_batches=solver_plan.test_iter.value,
            selection=selection_for(experiment).value, seed=plan.seed,
            positive_classes=adapter.positive_classes, weights=initial,
            gpu=experiment.training.gpu, progress=progress))

    evaluate = getattr(adapter, "evaluate", None)
    if evaluate is not None:
        # Studies scored otherwise than per test record (dense boundary maps, fc7 features +
        # gradient boosting) do their own inference; they write predictions.csv themselves.
        metrics = evaluate(plan, cfg, fold, result.selected_weights, run_dir)
    else:
        probs = predict(cfg, fold, result.selected_weights, run_dir, experiment.training.gpu)
        rows = adapter.predictions(fold, probs)
        write_csv(run_dir / "predictions.csv", rows)
        metrics = adapter.score(rows, fold)
    metrics["selected_epoch"] = result.selected_epoch
    metrics["selection"] = {result.selection: result.selected_value}
    _write_json(run_dir / "manifest.json", {
        "medtl_version": __version__, "caffe": caffe_env.build_info(),
        "dataset_manifest_sha256": fold.manifest_sha256,
        "initial_weights_sha256": sha256_file(initial) if initial else None,
        "selected_weights_sha256": sha256_file(result.selected_weights),
        "resumed_from_epoch": result.resumed_from_epoch,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    _write_json(run_dir / FINISHED, metrics)
    return metrics


def _untrained(initial: Path | None, run_dir: Path) -> TrainResult:
    """A policy under which nothing learns (Ravishankar's NA): its weights are the start."""
    if initial is None:
        raise RunError(f"{run_dir}: a policy that trains nothing needs pretrained weights")
    selected = run_dir / "selected.caffemodel"
    tmp = selected.with_name(".selected.caffemodel.tmp")
    shutil.copyfile(initial, tmp)
    os.replace(tmp, selected)
    return TrainResult(selected_epoch=0, selected_value=float("nan"), selection="none",
                       epochs_run=0, resumed_from_epoch=0, selected_weights=selected,
                       trace=run_dir / "trace.csv")


def predict(cfg: Configuration, fold: FoldData, weights: Path, run_dir: Path,
            gpu: int | None) -> np.ndarray:
    """Class probabilities of every test sample, in the test database's key order."""
    model = get_model(cfg.model)
    batch = min(cfg.solver.val_batch_size.value, fold.test_size)
    crop = model.crop_size if model.image_size > model.crop_size else 0
    net_path = write_text(run_dir / "net" / "test.prototxt", val_net(
        model.body, cfg.num_classes.value,
        DataSpec(fold.test, batch, crop_size=crop, mean_file=fold.mean_file),
        cfg.label or cfg.id, cfg.loss))
    c = caffe_env.caffe()
    caffe_env.set_mode(gpu)
    net = c.Net(str(net_path), c.TEST, weights=str(weights))
    out = []
    for _ in range(math.ceil(fold.test_size / batch)):
        net.forward()
        out.append(np.array(net.blobs["prob"].data, copy=True))
    return np.concatenate(out)[: fold.test_size]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows to a CSV, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# ------------------------------------------------------------------ the batch

def run_experiment(spec_path: Path, *, parallel: int | None = None, progress: bool = True
                   ) -> dict[str, Any]:
    """Run every unfinished run of a spec; returns {run_id: "finished" | "done" | error}."""
    experiment = load_experiment(spec_path)
    plans = expand(experiment)
    adapter_for(experiment).prepare(progress=progress)
    status: dict[str, Any] = {}
    todo = []
    for plan in plans:
        if (plan.run_dir / FINISHED).is_file():
            status[plan.run_id] = "finished earlier"
        else:
            todo.append(plan)
    print(f"{experiment.spec.paper}/{experiment.path.stem}: {len(plans)} runs, "
          f"{len(plans) - len(todo)} finished earlier, {len(todo)} to run", flush=True)
    workers = parallel or experiment.spec.parallel
    running: list[tuple[RunPlan, subprocess.Popen]] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < workers:
            plan = queue.pop(0)
            cmd = [sys.executable, "-m", "medtl", "run-one", str(experiment.path), plan.run_id]
            if not progress or workers > 1:
                cmd.append("--no-progress")
            print(f"  start {plan.run_id}", flush=True)
            running.append((plan, subprocess.Popen(cmd)))
        time.sleep(0.2)
        for plan, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((plan, proc))
            if proc.returncode == 0:
                status[plan.run_id] = "done"
                print(f"  done  {plan.run_id}", flush=True)
            else:
                status[plan.run_id] = f"failed (exit {proc.returncode}); rerun to resume"
                print(f"  FAILED {plan.run_id} (exit {proc.returncode})", flush=True)
    return status


def find_plan(spec_path: Path, run_id: str) -> RunPlan:
    experiment = load_experiment(spec_path)
    for plan in expand(experiment):
        if plan.run_id == run_id:
            return plan
    raise RunError(f"{spec_path}: no run {run_id!r} (see `medtl run --list {spec_path}`)")
