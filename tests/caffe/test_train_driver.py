"""The training driver: selection, trace, divergence, and kill-and-resume equivalence."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medtl.datasets.hdf5_writer import Hdf5Writer
from medtl.datasets.lmdb_writer import shuffled_order, write_lmdb
from medtl.nets.cifarnet import cifarnet
from medtl.nets.variants import DataSpec, train_net, val_net
from medtl.prototxt import read_net, write_text
from medtl.solver import solver_param
from medtl.surgery import read_weights
from medtl.synthetic import blob_images
from medtl.train.driver import DivergenceError, TrainSpec, loss_layers, train, validate

BATCH, N_TRAIN, N_VAL = 20, 200, 60


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name, n, seed in (("train", N_TRAIN, 1), ("val", N_VAL, 2)):
        images, labels = blob_images(n, 32, seed=seed)
        order = shuffled_order(n, seed)
        write_lmdb(root / name, ((int(order[i]), images[i], int(labels[i])) for i in range(n)))
    return root


def _run(datasets: Path, run_dir: Path, *, base_lr: float = 0.01, epochs: int = 4,
         selection: str = "max_val_auc") -> TrainSpec:
    run_dir.mkdir(parents=True, exist_ok=True)
    mean = (110.0, 110.0, 110.0)
    train_path = write_text(run_dir / "train.prototxt", train_net(
        cifarnet, 2, DataSpec(str(datasets / "train"), BATCH, mean_value=mean), "CifarNet"))
    val_path = write_text(run_dir / "val.prototxt", val_net(
        cifarnet, 2, DataSpec(str(datasets / "val"), BATCH, mean_value=mean), "CifarNet"))
    ipe = N_TRAIN // BATCH
    solver = write_text(run_dir / "solver.prototxt", solver_param(
        train_net=train_path, test_net=val_path, test_iter=N_VAL // BATCH, test_interval=ipe,
        base_lr=base_lr, momentum=0.9, weight_decay=0.0005, lr_policy="step", gamma=0.9,
        stepsize=ipe, max_iter=ipe * epochs, snapshot_prefix=run_dir / "unused",
        random_seed=11))
    return TrainSpec(solver=solver, run_dir=run_dir, iters_per_epoch=ipe, max_epochs=epochs,
                     val_records=N_VAL, selection=selection, progress=False)


@pytest.mark.slow
def test_training_writes_a_trace_and_keeps_the_selected_snapshot(caffe, datasets, tmp_path):
    spec = _run(datasets, tmp_path / "run")
    result = train(spec)
    with spec.run_dir.joinpath("trace.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    aucs = [float(r["val_auc"]) for r in rows]
    assert result.selected_epoch == 1 + int(np.argmax(aucs))
    # validation sees the trained weights: the blob task is learnt, not guessed
    assert max(aucs) > 0.9
    assert float(rows[-1]["val_loss"]) < 0.6
    assert result.selected_value == pytest.approx(max(aucs))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.01 * 0.9, rel=1e-5)
    best = sorted(spec.run_dir.joinpath("snapshots").glob("*.caffemodel"))
    expected = {f"epoch_iter_{e * spec.iters_per_epoch}.caffemodel"
                for e in {result.selected_epoch, 3, 4}}
    assert {p.name for p in best} == expected
    # the latest two epochs stay resumable: the earlier one if the latest is damaged
    assert sorted(p.name for p in spec.run_dir.joinpath("snapshots").glob("*.solverstate")) == [
        f"epoch_iter_{e * spec.iters_per_epoch}.solverstate" for e in (3, 4)]
    selected = read_weights(result.selected_weights)
    chosen = read_weights(spec.run_dir / "snapshots"
                          / f"epoch_iter_{result.selected_epoch * spec.iters_per_epoch}.caffemodel")
    for name in selected:
        np.testing.assert_array_equal(selected[name][0], chosen[name][0])


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(caffe, datasets, tmp_path):
    whole = train(_run(datasets, tmp_path / "whole"))

    spec = _run(datasets, tmp_path / "killed")
    script = (
        "from pathlib import Path\n"
        "from medtl.train.driver import TrainSpec, train\n"
        f"train(TrainSpec(solver=Path({str(spec.solver)!r}), run_dir=Path({str(spec.run_dir)!r}),"
        f" iters_per_epoch={spec.iters_per_epoch}, max_epochs={spec.max_epochs},"
        f" val_records={spec.val_records}, selection={spec.selection!r},"
        " progress=False))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    trace = spec.run_dir / "trace.csv"
    deadline = time.time() + 240
    while time.time() < deadline:
        if trace.is_file() and len(trace.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        if proc.poll() is not None:
            pytest.fail("the training process ended before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(trace.read_text().splitlines()) < 5, "the run finished before the kill"

    resumed = train(spec)
    assert resumed.resumed_from_epoch >= 2
    assert resumed.selected_epoch == whole.selected_epoch
    a, b = read_weights(whole.selected_weights), read_weights(resumed.selected_weights)
    for name in a:
        for x, y in zip(a[name], b[name], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=name)
    rows_a = (tmp_path / "whole" / "trace.csv").read_text().splitlines()
    rows_b = trace.read_text().splitlines()
    # Every column but the last (wall-clock seconds) is identical.
    assert [r.rsplit(",", 1)[0] for r in rows_a] == [r.rsplit(",", 1)[0] for r in rows_b]


@pytest.mark.slow
def test_divergence_stops_the_run_with_a_clear_error(caffe, datasets, tmp_path):
    spec = _run(datasets, tmp_path / "diverge", base_lr=1e4, epochs=3, selection="min_val_loss")
    with pytest.raises(DivergenceError, match=r"diverged|training loss is"):
        train(spec)


def test_a_loss_far_above_chance_is_divergence_even_in_the_first_epoch(tmp_path):
    from medtl.train.driver import _check_divergence

    spec = TrainSpec(solver=tmp_path / "s", run_dir=tmp_path, iters_per_epoch=1,
                     max_epochs=1, val_records=1, selection="min_val_loss",
                     chance_loss=math.log(2))
    _check_divergence(spec, 1, 0.9, 0.9, heads=1.0)            # a net still learning
    with pytest.raises(DivergenceError, match="chance level"):
        _check_divergence(spec, 1, 37.0, 37.0, heads=1.0)      # first epoch, saturated
    _check_divergence(spec, 1, 3.0, 3.0, heads=1.6)            # GoogLeNet's three heads


# ------------------------------------------------------------ validation sees each record once

N_ODD, ODD_BATCH = 49, 16   # 4 batches of 16 read 64 records: 15 of them twice


def _odd_val_net(root: Path, backend: str) -> Path:
    """A 49-class validation net over 49 records labelled 0..48: each label names its record."""
    images, _ = blob_images(N_ODD, 32, seed=4)
    labels = np.arange(N_ODD)
    if backend == "lmdb":
        write_lmdb(root / "odd", ((i, images[i], int(labels[i])) for i in range(N_ODD)))
        data = DataSpec(str(root / "odd"), ODD_BATCH, mean_value=(110.0, 110.0, 110.0))
    else:
        writer = Hdf5Writer(root / "odd_h5", "odd", N_ODD, images.shape[1:])
        for i in range(N_ODD):
            writer.put(i, images[i] - 110.0, labels[i])
        writer.close()
        data = DataSpec(str(writer.list_file), ODD_BATCH, backend="hdf5")
    return write_text(root / f"val_{backend}.prototxt", val_net(cifarnet, N_ODD, data, "odd"))


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_every_validation_sees_each_record_exactly_once(caffe, tmp_path, backend):
    path = _odd_val_net(tmp_path, backend)
    net, losses = caffe.Net(str(path), caffe.TEST), loss_layers(read_net(path))
    for _ in range(3):   # the Data layer's window moves on between evaluations
        result = validate(net, net, N_ODD, (1,), losses)
        assert sorted(result.labels.tolist()) == list(range(N_ODD))
        assert result.accuracy * N_ODD == pytest.approx(round(result.accuracy * N_ODD))
        assert math.isfinite(result.loss)


def _with_spread_weights(net):
    """The same weights for every call, large enough that records' losses differ."""
    rng = np.random.default_rng(3)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0, 0.02, blob.data.shape)
    return net


def test_the_validation_loss_is_the_mean_of_per_record_losses(caffe, tmp_path):
    """Each record's loss as SoftmaxWithLoss computes it, averaged over the records once."""
    path = _odd_val_net(tmp_path, "lmdb")
    net = _with_spread_weights(caffe.Net(str(path), caffe.TEST))
    result = validate(net, net, N_ODD, (1,), loss_layers(read_net(path)))
    same = _with_spread_weights(caffe.Net(str(path), caffe.TEST))   # a fresh read position
    probs, labels, caffe_means = [], [], []
    for _ in range(-(-N_ODD // ODD_BATCH)):
        out = same.forward()
        probs.append(same.blobs["prob"].data.copy())
        labels.append(same.blobs["label"].data.copy())
        caffe_means.append(float(out["loss"]))
    prob, label = np.concatenate(probs)[:N_ODD], np.concatenate(labels)[:N_ODD].astype(int)
    picked = np.maximum(prob[np.arange(N_ODD), label], np.finfo(np.float32).tiny)
    assert result.loss == pytest.approx(float(np.mean(-np.log(picked))), rel=1e-5)
    # Caffe's own batch means count the 15 wrapped records a second time.
    assert result.loss != pytest.approx(float(np.mean(caffe_means)), rel=1e-5)


# ------------------------------------------------------------ torn and damaged run files

def _resume_in_child(spec: TrainSpec) -> subprocess.CompletedProcess:
    """Resume in a child: a damaged file handed to Caffe aborts the whole process."""
    script = (
        "from pathlib import Path\n"
        "from medtl.train.driver import TrainSpec, train\n"
        f"train(TrainSpec(solver=Path({str(spec.solver)!r}), run_dir=Path({str(spec.run_dir)!r}),"
        f" iters_per_epoch={spec.iters_per_epoch}, max_epochs={spec.max_epochs},"
        f" val_records={spec.val_records}, selection={spec.selection!r}, progress=False))\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, GLOG_minloglevel="2"), timeout=600)


def _same_final_weights(a: TrainSpec, b: TrainSpec) -> None:
    last = f"epoch_iter_{a.iters_per_epoch * a.max_epochs}.caffemodel"
    x = read_weights(a.run_dir / "snapshots" / last)
    y = read_weights(b.run_dir / "snapshots" / last)
    for name in x:
        for p, q in zip(x[name], y[name], strict=True):
            np.testing.assert_array_equal(p, q, err_msg=name)


@pytest.mark.slow
def test_a_torn_last_trace_row_is_dropped_on_resume(caffe, datasets, tmp_path):
    whole = _run(datasets, tmp_path / "whole", epochs=4)
    train(whole)
    spec = _run(datasets, tmp_path / "torn", epochs=4)
    train(replace(spec, max_epochs=3))
    trace = spec.run_dir / "trace.csv"
    text = trace.read_text()
    torn = text[: text.rstrip("\n").rfind("\n") + 12]   # epoch 3's row cut by a kill
    trace.write_text(torn)
    train(spec)
    rows = trace.read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    _same_final_weights(whole, spec)


@pytest.mark.slow
def test_a_damaged_latest_snapshot_falls_back_to_the_one_before(caffe, datasets, tmp_path):
    whole = _run(datasets, tmp_path / "whole", epochs=3)
    train(whole)
    spec = _run(datasets, tmp_path / "damaged", epochs=3)
    train(replace(spec, max_epochs=2))
    state = spec.run_dir / "snapshots" / f"epoch_iter_{2 * spec.iters_per_epoch}.solverstate"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])        # truncated: Caffe would abort on it
    done = _resume_in_child(spec)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "damaged" in done.stdout and "epoch 1" in done.stdout
    _same_final_weights(whole, spec)


# ------------------------------------------------------------ the weights are read back rarely

def _count_weight_checks(monkeypatch) -> list[int]:
    """Wrap the driver's own weight check; returns the solver iteration of every call."""
    from medtl.train import driver

    calls: list[int] = []
    check = driver._check_weights

    def counted(spec, solver, epoch):
        calls.append(solver.iter)
        return check(spec, solver, epoch)

    monkeypatch.setattr(driver, "_check_weights", counted)
    return calls


def _poison_after_step(monkeypatch, at: int, layer: str) -> None:
    """Once the solver has stepped to iteration `at`, set one weight of `layer` to NaN in
    Caffe's own blob (what an overflowing update leaves)."""
    from medtl.train import driver

    step = driver._step

    def poisoned(solver):
        step(solver)
        if solver.iter == at:
            solver.net.params[layer][0].data.flat[0] = np.nan

    monkeypatch.setattr(driver, "_step", poisoned)


def _all_finite(model: Path) -> bool:
    return all(np.isfinite(b).all() for blobs in read_weights(model).values() for b in blobs)


@pytest.mark.slow
def test_a_healthy_run_reads_its_weights_back_once_per_epoch(caffe, datasets, tmp_path,
                                                            monkeypatch):
    calls = _count_weight_checks(monkeypatch)
    spec = _run(datasets, tmp_path / "healthy", epochs=2)
    train(spec)
    assert calls == [spec.iters_per_epoch, 2 * spec.iters_per_epoch]


@pytest.mark.slow
def test_a_weight_turned_nan_mid_epoch_stops_the_run_before_its_snapshot(caffe, datasets,
                                                                        tmp_path, monkeypatch):
    spec = _run(datasets, tmp_path / "nan", epochs=3)
    at = spec.iters_per_epoch + 3      # mid epoch 2: the next step's loss is NaN
    _poison_after_step(monkeypatch, at, "ip1")
    calls = _count_weight_checks(monkeypatch)
    with pytest.raises(DivergenceError,
                       match=r"epoch 2\) the weights of layer \w+ are no longer finite"):
        train(spec)
    assert calls == [spec.iters_per_epoch, at + 1]   # epoch 1's end, the anomalous loss
    snapshots = spec.run_dir / "snapshots"
    assert sorted(p.name for p in snapshots.glob("*.caffemodel")) == [
        f"epoch_iter_{spec.iters_per_epoch}.caffemodel"]
    assert _all_finite(snapshots / f"epoch_iter_{spec.iters_per_epoch}.caffemodel")
    assert not (spec.run_dir / "selected.caffemodel").exists()
    assert len((spec.run_dir / "trace.csv").read_text().splitlines()) == 2   # epoch 1 only


@pytest.mark.slow
def test_a_weight_turned_nan_by_an_epochs_last_step_is_caught_before_anything_is_written(
        caffe, datasets, tmp_path, monkeypatch):
    spec = _run(datasets, tmp_path / "nan_last", epochs=2)
    _poison_after_step(monkeypatch, spec.iters_per_epoch, "conv1")
    with pytest.raises(DivergenceError, match=r"at iteration 10 \(epoch 1\) the weights of "
                                              r"layer conv1 are no longer finite"):
        train(spec)
    assert not list((spec.run_dir / "snapshots").glob("*.caffemodel"))
    assert not (spec.run_dir / "selected.caffemodel").exists()
    assert not (spec.run_dir / "trace.csv").exists()


def test_a_step_loss_far_above_chance_or_the_first_loss_calls_for_a_weight_check(tmp_path):
    from medtl.train.driver import _anomalous, _loss_limit

    spec = TrainSpec(solver=tmp_path / "s", run_dir=tmp_path, iters_per_epoch=1,
                     max_epochs=1, val_records=1, selection="min_val_loss")
    assert _loss_limit(spec, None, heads=1.0) is None            # nothing to compare with yet
    assert _loss_limit(spec, 0.5, heads=1.0) == pytest.approx(50.0)   # 100 x the first loss
    with_chance = replace(spec, chance_loss=math.log(2))
    assert _loss_limit(with_chance, 0.5, heads=1.0) == pytest.approx(10 * math.log(2))
    assert _loss_limit(with_chance, None, heads=1.6) == pytest.approx(16 * math.log(2))
    for loss in (math.nan, math.inf, -math.inf):
        assert _anomalous(loss, None) and _anomalous(loss, 7.0)
    assert _anomalous(87.3, 6.93)                                # a saturated softmax
    assert not _anomalous(0.7, 6.93) and not _anomalous(0.7, None)
