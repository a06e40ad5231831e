"""Training on pycaffe, epoch by epoch, with validation, snapshot selection and resume.

One run = one solver prototxt (train net + validation net). Every epoch the driver steps the
solver through the epoch's iterations, validates (loss, accuracy, ROC AUC over each validation
record exactly once), snapshots (caffemodel + solverstate + Caffe's random state), appends a row
to `trace.csv` and keeps the snapshot the study's selection rule picks: the lowest
validation loss or the highest validation AUC. `iterations.csv` holds Caffe's own learning
rate and loss at every display interval of the solver, as `caffe train` prints them.

Exactly `caffe train`: Caffe is seeded once, by the solver's `random_seed`, and the driver
draws nothing itself, so on CPU an uninterrupted run ends with the weights `caffe train
--solver <the run's solver>` ends with, dropout masks and random crops included.

Resume: a killed run restarts from its last epoch's snapshot and ends with the same weights as
an uninterrupted one. Caffe's solverstate holds the iteration, the weights and the momentum
history but neither the data layers' read positions nor the RNG. The driver rebuilds the
solver (same seed: same initial draws and the same crop generators), restores the
solverstate, pops the batches the data layers had already served (the Data layer reads an
LMDB in key order; its crop generator advances as it served them), and sets Caffe's random
state to the one saved with the snapshot (`caffe._caffe.get_random_state`, patches/caffe/0003), so
the dropout masks continue where they stopped. On a GPU dropout draws from cuRAND, whose state
is not saved: a resumed GPU run with dropout is not bit-identical (cuDNN is not deterministic
either).

Divergence: each step's loss (a scalar) is checked; every weight is read back at each epoch's
end, before the epoch is validated or snapshotted, and after any step whose loss is non-finite
or far above chance or the first epoch's (`_check_weights`). A run whose weights turned NaN/inf
stops with the layer named; no snapshot or selected weights of that epoch are written.

Damage: a snapshot is complete when its record (`*.snapshot.json`: the sha256 of the
caffemodel and solverstate, Caffe's random state) is written after Caffe's files are durable.
The driver keeps the snapshots of the latest two epochs and resumes from the latest intact one,
so a damaged solverstate (which would abort Caffe) costs one epoch, not the run; a trace row
torn by a kill is dropped.
"""

from __future__ import annotations

import csv
import json
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
ITERATION_FIELDS = ("iteration", "learning_rate", "loss", "smoothed_loss")
# The driver's training semantics, part of every run's settings (runs of another version are
# stale): 1 re-seeded Caffe every epoch and could count validation records twice; 2 seeds
# once (= `caffe train`), saves Caffe's random state with each snapshot, scores each
# validation record once.
DRIVER_VERSION = 2
CHANCE_FACTOR = assumed(10.0, "a net still learning stays within a few times the chance-level "
                              "loss over an epoch; ten times it is a net that diverged (e.g. "
                              "a saturated softmax, loss ~37 where chance is 0.69)")


class DivergenceError(RunError):
    """The training loss became NaN/inf or exploded; the run stops instead of wasting time."""


@dataclass(frozen=True)
class TrainSpec:
    """What one training run needs; every field is explicit, nothing read from the cwd."""

    solver: Path                      # the run's solver (absolute paths inside)
    run_dir: Path                     # where trace.csv, snapshots/ and selected.caffemodel go
    iters_per_epoch: int
    max_epochs: int
    val_records: int                  # validation records: each is scored once per evaluation
    selection: Selection
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


def _snapshot_record(prefix: Path, iteration: int) -> Path:
    """Written last, once Caffe's two files are on disk: their sha256 and Caffe's random
    state. Its presence marks the snapshot complete; the hashes tell a damaged one."""
    return Path(f"{prefix}_iter_{iteration}.snapshot.json")


def _damage(prefix: Path, iteration: int) -> str | None:
    """Why the snapshot at `iteration` cannot be resumed from (None: it is intact)."""
    record = _snapshot_record(prefix, iteration)
    if not record.is_file():
        return "incomplete"
    try:
        hashes = json.loads(record.read_text())["sha256"]
    except (ValueError, KeyError):
        return f"{record.name} is damaged"
    for path in _snapshot_files(prefix, iteration):
        if not path.is_file():
            return f"{path.name} is missing"
        if io.sha256_file(path) != hashes.get(path.name):
            return f"{path.name} is damaged (its sha256 differs from the one recorded)"
    return None


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


def _read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a CSV the driver appends to. A kill while a row was written
    leaves it torn (no line end, fields missing): it is dropped, the run resumes before it."""
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(text.splitlines()))
    return [r for r in rows if None not in r.values() and None not in r]


def _append_rows(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def _resume_point(spec: TrainSpec, prefix: Path, trace: Path) -> tuple[int, list[dict]]:
    """The last epoch with a trace row and an intact snapshot; the rows up to it."""
    rows = _read_rows(trace)
    for row in reversed(rows):
        epoch = int(row["epoch"])
        damage = _damage(prefix, epoch * spec.iters_per_epoch)
        if damage is None:
            return epoch, [r for r in rows if int(r["epoch"]) <= epoch]
        if damage != "incomplete":
            print(f"{spec.run_dir}: the snapshot of epoch {epoch} cannot be resumed from: "
                  f"{damage}; trying the one before", flush=True)
    return 0, []


# ------------------------------------------------------------------ loss and validation

FLT_MIN = np.float32(np.finfo(np.float32).tiny)   # SoftmaxWithLoss clamps its probability here
SCORED_LOSSES = ("SoftmaxWithLoss", "SigmoidCrossEntropyLoss")


@dataclass(frozen=True)
class LossHead:
    """One loss layer: its top, its loss weight, and what it computes from which blobs."""

    top: str
    weight: float
    kind: str
    scores: str
    label: str
    per_output: bool = False   # a sigmoid loss normalised by outputs (VALID/FULL), not records

    def per_record(self, net, take: int) -> np.ndarray:
        """The loss of each of the first `take` records of the batch, as Caffe computes it."""
        x = np.array(net.blobs[self.scores].data[:take], dtype=np.float32).reshape(take, -1)
        label = np.array(net.blobs[self.label].data[:take]).reshape(take, -1)
        if self.kind == "SoftmaxWithLoss":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            picked = prob[np.arange(take), label[:, 0].astype(int)]
            return -np.log(np.maximum(picked, FLT_MIN).astype(np.float64))
        x, t = x.astype(np.float64), label.astype(np.float64)
        positive = (x >= 0).astype(np.float64)
        loss = -(x * (t - positive) - np.log1p(np.exp(x - 2 * x * positive))).sum(axis=1)
        return loss / x.shape[1] if self.per_output else loss


def loss_layers(net_param) -> list[LossHead]:
    """Every loss layer of a NetParameter (GoogLeNet: three, the auxiliary ones weighted 0.3)."""
    pb = caffe_pb2().LossParameter
    heads = []
    for layer in net_param.layer:
        if not layer.type.endswith("Loss"):
            continue
        if layer.type not in SCORED_LOSSES:
            raise RunError(f"loss layer {layer.name!r} is a {layer.type}; the driver scores "
                           f"{' and '.join(SCORED_LOSSES)}")
        param = layer.loss_param
        if param.HasField("normalization"):
            mode = param.normalization
        elif param.HasField("normalize"):
            mode = pb.VALID if param.normalize else pb.BATCH_SIZE
        else:   # each layer's own default
            mode = pb.VALID if layer.type == "SoftmaxWithLoss" else pb.BATCH_SIZE
        heads.append(LossHead(
            top=layer.top[0], weight=layer.loss_weight[0] if layer.loss_weight else 1.0,
            kind=layer.type, scores=layer.bottom[0], label=layer.bottom[1],
            per_output=layer.type != "SoftmaxWithLoss" and mode in (pb.VALID, pb.FULL)))
    return heads


def _net_loss(blobs, heads: list[LossHead]) -> np.float32:
    """The loss Caffe's Step adds up: loss-weighted tops, summed in float in layer order."""
    total = np.float32(0)
    for head in heads:
        top = np.float32(np.asarray(blobs[head.top].data).reshape(-1)[0])
        total = np.float32(total + top * np.float32(head.weight))
    return total


@dataclass(frozen=True)
class Validation:
    loss: float         # mean over the records of the loss-weighted sum of the heads' losses
    accuracy: float
    auc: float
    labels: np.ndarray  # each scored record's label row, in the order read


def validate(net, train_net, records: int, positive: tuple[int, ...],
             heads: list[LossHead]) -> Validation:
    """Score the validation net over `records` consecutive records, each exactly once.

    Caffe's data layers cycle through their records, so a pass of ceil(n / batch) batches
    reads n records and then wraps; only the first n count. Those are n consecutive records of
    the cycle, that is every record once, wherever the previous evaluation left the cursor.
    """
    net.share_with(train_net)   # Caffe's Solver::Test shares the trained weights; so must we
    batch = net.blobs["data"].data.shape[0]
    losses, probs, labels, left = [], [], [], records
    while left > 0:
        net.forward()
        take = min(batch, left)
        losses.append(sum(h.weight * h.per_record(net, take) for h in heads))
        probs.append(np.array(net.blobs["prob"].data[:take]).reshape(take, -1))
        labels.append(np.array(net.blobs["label"].data[:take]).reshape(take, -1))
        left -= take
    prob, label = np.concatenate(probs), np.concatenate(labels)
    accuracy, auc = _classification(prob, label, positive)
    return Validation(float(np.mean(np.concatenate(losses))), accuracy, auc, label[:, 0]
                      if label.shape[1] == 1 else label)


def _classification(prob: np.ndarray, label: np.ndarray,
                    positive: tuple[int, ...]) -> tuple[float, float]:
    """Accuracy and ROC AUC of single-label outputs (NaN for multi-label ones)."""
    if label.shape[1] != 1:
        return float("nan"), float("nan")
    truth = label[:, 0].astype(int)
    if prob.shape[1] == 1:   # one sigmoid output: class 1 when p >= 0.5
        guess, score, is_positive = (prob[:, 0] >= 0.5).astype(int), prob[:, 0], truth == 1
    else:
        guess, is_positive = prob.argmax(1), np.isin(truth, positive)
        score = prob[:, list(positive)].sum(axis=1)
    accuracy = float((guess == truth).mean())
    y = is_positive.astype(int)
    auc = roc_auc(y, score) if 0 < y.sum() < len(y) else float("nan")
    return accuracy, float(auc)


class IterationLog:
    """`iterations.csv`: at each display interval, the rate Caffe applies and its losses.

    The smoothed loss is Caffe's `Solver::UpdateSmoothedLoss` over `average_loss` iterations,
    in Caffe's float arithmetic, so a row reads like `caffe train`'s "Iteration N, lr = ..."
    and "Iteration N (...), loss = ..." lines. Like Caffe's, it restarts on resume.
    """

    def __init__(self, path: Path, display: int, average_loss: int, start: int) -> None:
        self.path, self.every, self.window, self.start = path, max(display, 1), \
            max(average_loss, 1), start
        self.losses: list[np.float32] = []
        self.smoothed = np.float32(0)
        self.pending: list[dict] = []

    def add(self, iteration: int, rate: float, loss: np.float32) -> None:
        if len(self.losses) < self.window:
            self.losses.append(loss)
            size = np.float32(len(self.losses))
            self.smoothed = np.float32((self.smoothed * (size - 1) + loss) / size)
        else:
            i = (iteration - self.start) % self.window
            self.smoothed = np.float32(self.smoothed
                                       + (loss - self.losses[i]) / np.float32(self.window))
            self.losses[i] = loss
        if iteration % self.every == 0:
            self.pending.append(dict(iteration=iteration, learning_rate=rate, loss=float(loss),
                                     smoothed_loss=float(self.smoothed)))

    def flush(self) -> None:
        _append_rows(self.path, ITERATION_FIELDS, self.pending)
        self.pending = []

    def truncate(self, before: int) -> None:
        """Keep the rows of iterations before `before` (the resume point)."""
        rows = [r for r in _read_rows(self.path) if int(r["iteration"]) < before]
        io.write_csv(self.path, rows, list(ITERATION_FIELDS))


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
    if spec.iters_per_epoch <= 0 or spec.max_epochs <= 0 or spec.val_records <= 0:
        raise ValueError("iters_per_epoch, max_epochs and val_records must be positive")
    c = caffe()
    rng = c._caffe   # patches/caffe/0003 adds get/set_random_state to the extension module
    if not hasattr(rng, "get_random_state"):
        raise RunError(f"pycaffe at {c.__file__} lacks get_random_state: build Caffe with the "
                       "kit's patches (`make setup`, patches/caffe/0003)")
    set_mode(spec.gpu)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    _snapshot_dir(spec).mkdir(exist_ok=True)
    solver_path, prefix = _driver_solver(spec)
    trace = spec.run_dir / "trace.csv"
    resumed, rows = _resume_point(spec, prefix, trace)

    solver = c.get_solver(str(solver_path))
    params = read_solver(spec.solver)
    train_net_path = Path(read_solver(solver_path).train_net)
    train_heads = loss_layers(read_net(train_net_path))
    val_heads = loss_layers(read_net(Path(params.test_net[0])))
    test_net = solver.test_nets[0]
    log = IterationLog(spec.run_dir / "iterations.csv", params.display, params.average_loss,
                       resumed * spec.iters_per_epoch)
    if resumed:
        print(f"resuming after epoch {resumed} of {spec.max_epochs}", flush=True)
        _restore(spec, rng, solver, prefix, resumed)
        io.write_csv(trace, rows, list(TRACE_FIELDS))
        log.truncate(resumed * spec.iters_per_epoch)
    else:
        for stale in (trace, log.path):
            stale.unlink(missing_ok=True)
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
    heads = sum(h.weight for h in train_heads)
    try:
        for epoch in range(resumed + 1, spec.max_epochs + 1):
            start = time.time()
            epoch_losses, rate = _train_epoch(spec, solver, epoch, train_heads, log, bar,
                                              _loss_limit(spec, first_loss, heads))
            _check_weights(spec, solver, epoch)   # before anything is validated or saved
            train_loss = float(np.mean(epoch_losses))
            first_loss = train_loss if first_loss is None else first_loss
            _check_divergence(spec, epoch, train_loss, first_loss, heads)
            val = validate(test_net, solver.net, spec.val_records, spec.positive_classes,
                           val_heads)
            _snapshot(rng, solver, prefix)
            log.flush()
            row = dict(epoch=epoch, iteration=solver.iter, learning_rate=rate,
                       train_loss=train_loss, val_loss=val.loss, val_accuracy=val.accuracy,
                       val_auc=val.auc, seconds=round(time.time() - start, 3))
            _append_rows(trace, TRACE_FIELDS, [row])
            value = _selection_value(spec.selection, row)
            if _better(spec.selection, value, best):
                best_epoch, best = epoch, value
            _prune(prefix, spec, latest=epoch, best=best_epoch)
            _say(bar, f"epoch {epoch}/{spec.max_epochs}: train loss {train_loss:.4f}, "
                      f"val loss {val.loss:.4f}, val accuracy {val.accuracy:.4f}, val AUC "
                      f"{val.auc:.4f}, lr {rate:.3g}, {row['seconds']:.1f} s")
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


def _train_epoch(spec: TrainSpec, solver, epoch: int, heads: list[LossHead], log: IterationLog,
                 bar, limit: float | None) -> tuple[list[float], float]:
    """Step the solver through one epoch; (each step's loss, the last learning rate).

    Per step only the loss (one scalar per head) is read back; the weights only when the loss
    is anomalous (see `_check_weights`).
    """
    blobs = solver.net.blobs   # pycaffe builds this dict anew on every `solver.net.blobs`
    losses, rate = [], float("nan")
    for _ in range(spec.iters_per_epoch):
        iteration, rate = solver.iter, float(solver.lr)
        _step(solver)
        loss = _net_loss(blobs, heads)
        value = float(loss)
        if limit is None and math.isfinite(value):   # a fresh run's first step stands in
            limit = _loss_limit(spec, value, sum(h.weight for h in heads))   # for epoch 1
        if _anomalous(value, limit):
            _check_weights(spec, solver, epoch)
            _check_loss(spec, solver, value, epoch)
        log.add(iteration, rate, loss)
        losses.append(value)
        if bar is not None:
            bar.update(1)
    return losses, rate


SNAPSHOT_FACTOR = 4   # caffemodel + solverstate history (Adam: 2 blobs per weight) + margin


def _snapshot(rng, solver, prefix: Path) -> None:
    """Caffe's caffemodel + solverstate (made durable), then the record that completes them.

    Caffe aborts the process when it cannot write a snapshot, so the space is checked first.
    """
    weights = sum(blob.data.nbytes for blobs in solver.net.params.values() for blob in blobs)
    io.check_free(prefix.parent, SNAPSHOT_FACTOR * weights)
    solver.snapshot()
    files = _snapshot_files(prefix, solver.iter)
    for path in files:
        with path.open("rb") as f:
            os.fsync(f.fileno())
    io.write_json(_snapshot_record(prefix, solver.iter), {
        "iteration": solver.iter, "random_state": rng.get_random_state(),
        "sha256": {path.name: io.sha256_file(path) for path in files}})


def _restore(spec: TrainSpec, rng, solver, prefix: Path, epoch: int) -> None:
    """Bring a fresh solver to where the run stood after `epoch` (see the module docstring)."""
    iteration = epoch * spec.iters_per_epoch
    _, state = _snapshot_files(prefix, iteration)
    solver.restore(str(state))
    test_net = solver.test_nets[0]
    val_batches = -(-spec.val_records // test_net.blobs["data"].data.shape[0])
    for _ in range(iteration):
        solver.net.forward(end=solver.net._layer_names[0])
    for _ in range(epoch * val_batches):
        test_net.forward(end=test_net._layer_names[0])
    rng.set_random_state(json.loads(_snapshot_record(prefix, iteration).read_text())
                         ["random_state"])


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


def _step(solver) -> None:
    """One solver iteration (a function of its own so tests can act between steps)."""
    solver.step(1)


def _loss_limit(spec: TrainSpec, first: float | None, heads: float) -> float | None:
    """The training loss above which a step's weights are read back: the divergence rules of
    `_check_divergence` applied to one iteration's loss. None until a reference is known."""
    limits = [] if first is None else [spec.divergence_factor * max(first, 1e-8)]
    if spec.chance_loss is not None:
        limits.append(spec.chance_factor * spec.chance_loss * heads)
    return min(limits) if limits else None


def _anomalous(loss: float, limit: float | None) -> bool:
    """Whether a step's loss calls for reading the weights back: NaN, inf or above `limit`."""
    return not math.isfinite(loss) or (limit is not None and loss > limit)


def _check_loss(spec: TrainSpec, solver, loss: float, epoch: int) -> None:
    """Stop on a non-finite training loss before the next step can use it."""
    if not math.isfinite(loss):
        raise DivergenceError(f"{spec.run_dir}: at iteration {solver.iter} (epoch {epoch}) "
                              f"the training loss is {loss}")


def _check_weights(spec: TrainSpec, solver, epoch: int) -> None:
    """Stop when any weight is NaN/inf, naming the first such layer.

    The driver calls this at every epoch's end, before the epoch is validated, snapshotted or
    selected, and after any step whose loss is anomalous (non-finite, or above
    `_loss_limit`): reading every weight back costs ~45 ms per AlexNet-H step on a CPU and a
    228 MB device-to-host copy on a GPU, while the loss is one scalar. The loss alone is not
    enough: SoftmaxWithLoss saturates at -log(FLT_MIN) while weights overflow, and a
    max-pooling layer fed NaNs writes its gradient out of bounds in Caffe's backward pass.
    Weights turn non-finite through an exploding update, which shows in the loss first. A
    weight gone NaN by a step whose loss was normal is found after the next step (its loss is
    NaN or saturated) or at the epoch's end: unlike a check after every step, that next step
    runs once with the NaN weight.
    """
    for name, blobs in solver.net.params.items():
        for blob in blobs:
            if not np.isfinite(blob.data).all():
                raise DivergenceError(f"{spec.run_dir}: at iteration {solver.iter} (epoch "
                                      f"{epoch}) the weights of layer {name} are no longer "
                                      "finite (the training loss diverged)")


def _prune(prefix: Path, spec: TrainSpec, latest: int, best: int) -> None:
    """Keep the snapshots of the latest two epochs (resume; the earlier one in case the latest
    is damaged) and the best epoch's caffemodel."""
    resumable = {latest, latest - 1}
    for path in _snapshot_dir(spec).glob(f"{prefix.name}_iter_*"):
        iteration = int(path.name.rsplit("_iter_", 1)[1].split(".")[0])
        epoch = iteration // spec.iters_per_epoch
        if epoch not in resumable and not (epoch == best and path.suffix == ".caffemodel"):
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


