"""Training on pycaffe, epoch by epoch, with validation, snapshot selection and resume.

One run = one solver prototxt (train net + validation net). Every epoch the driver steps the
solver through the epoch's iterations, validates (loss, accuracy, ROC AUC), snapshots
(caffemodel + solverstate), appends a row to `trace.csv` and keeps the snapshot the paper
would keep: Shin's lowest validation loss, Tajbakhsh's highest validation AUC.

Resume: a killed run restarts from its last epoch's solverstate and ends with the same weights
as an uninterrupted one. Caffe's solverstate holds the iteration, the weights and the momentum
history but neither the data layers' read positions nor the RNG; so the driver re-seeds Caffe
at the start of every epoch, and on resume first pops the batches the data layers had already
served (the prefetching Data layer reads an LMDB in key order).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medtl import io
from medtl.caffe_env import caffe, caffe_pb2, set_mode
from medtl.errors import RunError
from medtl.metrics.roc import roc_auc
from medtl.prototxt import read_net, read_solver, write_text
from medtl.provenance import assumed
from medtl.surgery import check_weights_fit

Selection = Literal["min_val_loss", "max_val_auc"]
TRACE_FIELDS = ("epoch", "iteration", "learning_rate", "train_loss", "val_loss",
                "val_accuracy", "val_auc", "seconds")
CHANCE_FACTOR = assumed(10.0, "a net still learning stays within a few times the chance-level "
                              "loss over an epoch; ten times it is a net that diverged (e.g. "
                              "a saturated softmax, loss ~37 where chance is 0.69)")
SEED_STRIDE = 1_000_003  # epoch seeds: seed * stride + epoch, distinct for every (seed, epoch)


class DivergenceError(RunError):
    """The training loss became NaN/inf or exploded; the run stops instead of wasting time."""


@dataclass(frozen=True)
class TrainSpec:
    """What one training run needs; every field is explicit, nothing read from the cwd."""

    solver: Path                      # the run's solver (absolute paths inside)
    run_dir: Path                     # where trace.csv, snapshots/ and selected.caffemodel go
    iters_per_epoch: int
    max_epochs: int
    val_batches: int                  # validation batches per evaluation (the solver's test_iter)
    selection: Selection
    seed: int
    positive_classes: tuple[int, ...] = (1,)   # classes merged into "positive" for the AUC
    weights: Path | None = None       # initial weights (transplanted / pretrained), if any
    divergence_factor: float = 100.0  # stop when the epoch loss exceeds this x the first one
    # Loss of a net that outputs chance (per loss head: ln K for a K-way softmax); an epoch
    # whose mean training loss exceeds `chance_factor` times it (summed over the heads'
    # weights) has diverged even when it diverged within the first epoch.
    chance_loss: float | None = None
    chance_factor: float = CHANCE_FACTOR.value
    gpu: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class TrainResult:
    selected_epoch: int
    selected_value: float
    selection: Selection
    epochs_run: int
    resumed_from_epoch: int
    selected_weights: Path
    trace: Path

    def to_dict(self) -> dict:
        out = asdict(self)
        out["selected_weights"] = str(self.selected_weights)
        out["trace"] = str(self.trace)
        return out


# ------------------------------------------------------------------ files of a run

def _snapshot_dir(spec: TrainSpec) -> Path:
    return spec.run_dir / "snapshots"


def _snapshot_files(prefix: Path, iteration: int) -> tuple[Path, Path]:
    return (Path(f"{prefix}_iter_{iteration}.caffemodel"),
            Path(f"{prefix}_iter_{iteration}.solverstate"))


def _driver_solver(spec: TrainSpec) -> tuple[Path, Path]:
    """A copy of the solver in which only the driver validates and snapshots.

    Returns (solver path, snapshot prefix). Caffe's own periodic testing and snapshotting
    would run inside `step` on top of the driver's, so they are switched off here.
    """
    solver = read_solver(spec.solver)
    prefix = _snapshot_dir(spec) / "epoch"
    solver.test_interval = spec.iters_per_epoch * spec.max_epochs + 1
    solver.test_initialization = False
    solver.snapshot = 0
    solver.snapshot_prefix = str(prefix)
    solver.display = 0
    solver.max_iter = spec.iters_per_epoch * spec.max_epochs
    if spec.gpu is not None:
        solver.solver_mode = caffe_pb2().SolverParameter.GPU
    path = write_text(spec.run_dir / "solver.driver.prototxt", solver,
                      header=[f"written by medtl.train.driver from {spec.solver}: validation "
                              "and snapshots are the driver's (once per epoch)"])
    return path, prefix


def _read_trace(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_trace(path: Path, rows: list[dict]) -> None:
    io.write_csv(path, rows, list(TRACE_FIELDS))


def _append_trace(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TRACE_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _resume_point(spec: TrainSpec, prefix: Path, trace: Path) -> tuple[int, list[dict]]:
    """The last epoch with both a solverstate and a trace row; the rows up to it."""
    rows = _read_trace(trace)
    for row in reversed(rows):
        epoch = int(row["epoch"])
        _, state = _snapshot_files(prefix, epoch * spec.iters_per_epoch)
        if state.is_file():
            return epoch, [r for r in rows if int(r["epoch"]) <= epoch]
    return 0, []


# ------------------------------------------------------------------ loss and validation

def _loss_weights(net_path: Path) -> dict[str, float]:
    """Top name -> loss weight of every loss layer (GoogLeNet's auxiliary heads: 0.3)."""
    weights = {}
    for layer in read_net(net_path).layer:
        if layer.type.endswith("Loss"):
            weights[layer.top[0]] = layer.loss_weight[0] if layer.loss_weight else 1.0
    return weights


def _validate(net, train_net, batches: int, positive: tuple[int, ...],
              loss_weights: dict[str, float]) -> tuple[float, float, float]:
    # Caffe's Solver::Test shares the trained weights before testing; so must we.
    net.share_with(train_net)
    losses, correct, count, scores, labels = [], 0, 0, [], []
    for _ in range(batches):
        out = net.forward()
        losses.append(sum(float(out[k]) * w for k, w in loss_weights.items() if k in out))
        prob = np.array(net.blobs["prob"].data, copy=True)
        label = np.array(net.blobs["label"].data, copy=True).reshape(len(prob), -1)
        if prob.ndim == 2 and label.shape[1] == 1:
            truth = label[:, 0].astype(int)
            # one sigmoid output: class 1 when p >= 0.5; softmax: the most probable class
            guess = (prob[:, 0] >= 0.5).astype(int) if prob.shape[1] == 1 else prob.argmax(1)
            correct += int((guess == truth).sum())
            count += len(truth)
            if prob.shape[1] > 1:
                scores.append(prob[:, list(positive)].sum(axis=1))
            else:
                scores.append(prob[:, 0])
            labels.append(np.isin(truth, positive) if prob.shape[1] > 1 else truth == 1)
    accuracy = correct / count if count else float("nan")
    auc = float("nan")
    if scores:
        y, s = np.concatenate(labels).astype(int), np.concatenate(scores)
        if 0 < y.sum() < len(y):
            auc = roc_auc(y, s)
    return float(np.mean(losses)), accuracy, auc


def _better(selection: Selection, value: float, best: float | None) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if selection == "min_val_loss" else value > best


def _selection_value(selection: Selection, row: dict) -> float:
    return float(row["val_loss"] if selection == "min_val_loss" else row["val_auc"])


# ------------------------------------------------------------------ the loop

def train(spec: TrainSpec) -> TrainResult:
    """Run (or resume) training to `max_epochs`; returns the selected snapshot."""
    if spec.iters_per_epoch <= 0 or spec.max_epochs <= 0 or spec.val_batches <= 0:
        raise ValueError("iters_per_epoch, max_epochs and val_batches must be positive")
    c = caffe()
    set_mode(spec.gpu)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    _snapshot_dir(spec).mkdir(exist_ok=True)
    solver_path, prefix = _driver_solver(spec)
    trace = spec.run_dir / "trace.csv"
    resumed, rows = _resume_point(spec, prefix, trace)

    solver = c.get_solver(str(solver_path))
    train_net_path = Path(read_solver(solver_path).train_net)
    loss_weights = _loss_weights(train_net_path)
    test_net = solver.test_nets[0]
    if resumed:
        print(f"resuming after epoch {resumed} of {spec.max_epochs}", flush=True)
        _, state = _snapshot_files(prefix, resumed * spec.iters_per_epoch)
        solver.restore(str(state))
        _write_trace(trace, rows)
        # Pop what the data layers served before the interruption (see module docstring).
        for _ in range(resumed * spec.iters_per_epoch):
            solver.net.forward(end=solver.net._layer_names[0])
        for _ in range(resumed * spec.val_batches):
            test_net.forward(end=test_net._layer_names[0])
    else:
        if trace.exists():
            trace.unlink()
        if spec.weights is not None:
            check_weights_fit(solver.net, spec.weights, train_net_path, require_all=False)
            solver.net.copy_from(str(spec.weights))

    best_epoch, best = 0, None
    for row in rows:
        value = _selection_value(spec.selection, row)
        if _better(spec.selection, value, best):
            best_epoch, best = int(row["epoch"]), value

    total = spec.iters_per_epoch * spec.max_epochs
    bar = _progress(spec, total, resumed * spec.iters_per_epoch)
    first_loss = float(rows[0]["train_loss"]) if rows else None
    try:
        for epoch in range(resumed + 1, spec.max_epochs + 1):
            start = time.time()
            c.set_random_seed(spec.seed * SEED_STRIDE + epoch)
            epoch_losses = []
            for _ in range(spec.iters_per_epoch):
                solver.step(1)
                blobs = solver.net.blobs
                loss = sum(float(blobs[k].data) * w for k, w in loss_weights.items())
                _check_finite(spec, solver, loss, epoch)
                epoch_losses.append(loss)
                if bar is not None:
                    bar.update(1)
            train_loss = float(np.mean(epoch_losses))
            first_loss = train_loss if first_loss is None else first_loss
            _check_divergence(spec, epoch, train_loss, first_loss,
                              sum(loss_weights.values()))
            val_loss, val_acc, val_auc = _validate(test_net, solver.net, spec.val_batches,
                                                   spec.positive_classes, loss_weights)
            solver.snapshot()
            row = dict(epoch=epoch, iteration=solver.iter,
                       learning_rate=_current_lr(solver_path, solver.iter - 1),
                       train_loss=train_loss, val_loss=val_loss, val_accuracy=val_acc,
                       val_auc=val_auc, seconds=round(time.time() - start, 3))
            _append_trace(trace, row)
            value = _selection_value(spec.selection, row)
            if _better(spec.selection, value, best):
                best_epoch, best = epoch, value
            _prune(prefix, spec, keep_epochs={epoch, best_epoch})
            _say(bar, f"epoch {epoch}/{spec.max_epochs}: train loss {train_loss:.4f}, "
                      f"val loss {val_loss:.4f}, val accuracy {val_acc:.4f}, val AUC "
                      f"{val_auc:.4f}, lr {row['learning_rate']:.3g}, {row['seconds']:.1f} s")
    finally:
        if bar is not None:
            bar.close()

    if best is None:
        raise DivergenceError(f"{spec.run_dir}: no epoch gave a usable {spec.selection} "
                              "(validation AUC needs both classes in the validation set)")
    model, _ = _snapshot_files(prefix, best_epoch * spec.iters_per_epoch)
    selected = io.copy_file(model, spec.run_dir / "selected.caffemodel")
    return TrainResult(best_epoch, float(best), spec.selection, spec.max_epochs, resumed,
                       selected, trace)


def _check_divergence(spec: TrainSpec, epoch: int, train_loss: float, first_loss: float,
                      heads: float) -> None:
    """Stop a run whose epoch loss exploded against its first epoch or against chance."""
    where = f"{spec.run_dir}: epoch {epoch}"
    if train_loss > spec.divergence_factor * max(first_loss, 1e-8):
        raise DivergenceError(f"{where} training loss {train_loss:.4g} exceeds "
                              f"{spec.divergence_factor:g} x the first epoch's "
                              f"{first_loss:.4g}: the training diverged")
    if spec.chance_loss is not None:
        chance = spec.chance_loss * heads
        if train_loss > spec.chance_factor * chance:
            raise DivergenceError(f"{where} training loss {train_loss:.4g} is "
                                  f"{train_loss / chance:.0f} x the chance level {chance:.3g}: "
                                  "the training diverged (a lower base_lr may help)")


def _check_finite(spec: TrainSpec, solver, loss: float, epoch: int) -> None:
    """Stop on a non-finite loss or weight before the next step can use it.

    Checking the weights, not only the loss, matters: SoftmaxWithLoss saturates at
    -log(FLT_MIN) while weights overflow, and a max-pooling layer fed NaNs writes its gradient
    out of bounds in Caffe's backward pass, corrupting memory.
    """
    where = f"{spec.run_dir}: at iteration {solver.iter} (epoch {epoch})"
    if not math.isfinite(loss):
        raise DivergenceError(f"{where} the training loss is {loss}")
    for name, blobs in solver.net.params.items():
        for blob in blobs:
            if not np.isfinite(blob.data).all():
                raise DivergenceError(f"{where} the weights of layer {name} are no longer "
                                      "finite (the training loss diverged)")


def _current_lr(solver_path: Path, iteration: int) -> float:
    from medtl.inspect_net import learning_rate

    return learning_rate(read_solver(solver_path), max(iteration, 0))


def _prune(prefix: Path, spec: TrainSpec, keep_epochs: set[int]) -> None:
    """Keep the latest solverstate (resume) and the caffemodels of the latest and best epochs."""
    latest = max(keep_epochs)
    for path in _snapshot_dir(spec).glob(f"{prefix.name}_iter_*"):
        iteration = int(path.name.rsplit("_iter_", 1)[1].split(".")[0])
        epoch = iteration // spec.iters_per_epoch
        keep = (epoch == latest) if path.suffix == ".solverstate" else epoch in keep_epochs
        if not keep:
            path.unlink()


def _say(bar, line: str) -> None:
    """One line per epoch, in the run's log and on the console (above the progress bar)."""
    if bar is None:
        print(line, flush=True)
    else:
        bar.write(line)


def _progress(spec: TrainSpec, total: int, done: int):
    if not spec.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=spec.run_dir.name, unit="it",
                dynamic_ncols=True, leave=False)


