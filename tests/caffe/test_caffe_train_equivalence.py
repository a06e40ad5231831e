"""The kit's driver trains exactly what `caffe train` trains with the same solver.

Every net family draws random numbers while it trains: dropout masks (AlexNet, GoogLeNet,
OverFeat, VGG), random crops (the -H nets). An uninterrupted kit run must end with every blob
bit-identical to `caffe train --solver <the run's solver>` on CPU, a resumed run identical to an
uninterrupted one, and the kit's per-iteration log must read like Caffe's display lines.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medtl import caffe_env
from medtl.datasets.lmdb_writer import shuffled_order, write_lmdb
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, train_net, val_net
from medtl.prototxt import write_text
from medtl.solver import solver_param
from medtl.surgery import read_weights
from medtl.synthetic import blob_images
from medtl.train.driver import TrainSpec, train

pytestmark = pytest.mark.slow


def _lmdb(dest: Path, n: int, size: int, seed: int) -> Path:
    images, labels = blob_images(n, size, seed=seed)
    order = shuffled_order(n, seed)
    write_lmdb(dest, ((int(order[i]), images[i], int(labels[i])) for i in range(n)))
    return dest


def _setup(root: Path, model: str, *, size: int, crop: int, n_train: int, n_val: int,
           batch: int, epochs: int, display: int = 1) -> TrainSpec:
    """A run whose batch does not divide the training set (the Data layer wraps)."""
    root.mkdir(parents=True, exist_ok=True)
    body = get_model(model).body
    mean = (110.0, 110.0, 110.0)
    train_db = _lmdb(root / "train_db", n_train, size, 1)
    val_db = _lmdb(root / "val_db", n_val, size, 2)
    train_path = write_text(root / "train.prototxt", train_net(
        body, 2, DataSpec(str(train_db), batch, crop_size=crop, mean_value=mean), model))
    val_path = write_text(root / "val.prototxt", val_net(
        body, 2, DataSpec(str(val_db), batch, crop_size=crop, mean_value=mean), model))
    ipe = -(-n_train // batch)
    solver = write_text(root / "solver.prototxt", solver_param(
        train_net=train_path, test_net=val_path, test_iter=-(-n_val // batch),
        test_interval=ipe, base_lr=0.001, momentum=0.9, weight_decay=0.0005, lr_policy="step",
        gamma=0.5, stepsize=ipe, max_iter=ipe * epochs, snapshot_prefix=root / "tool",
        random_seed=5, display=display, average_loss=3))
    return TrainSpec(solver=solver, run_dir=root / "kit", iters_per_epoch=ipe,
                     max_epochs=epochs, val_records=n_val, selection="min_val_loss",
                     progress=False)


def _caffe_train(spec: TrainSpec) -> tuple[Path, str]:
    """`caffe train` on the very solver the kit was given; (final caffemodel, its log)."""
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    done = subprocess.run([str(caffe_env.caffe_binary()), "train", f"--solver={spec.solver}"],
                          check=True, env=env, capture_output=True, text=True)
    last = spec.iters_per_epoch * spec.max_epochs
    return spec.solver.parent / f"tool_iter_{last}.caffemodel", done.stderr


def _assert_same_blobs(a: Path, b: Path) -> None:
    x, y = read_weights(a), read_weights(b)
    assert list(x) == list(y)
    for name in x:
        for i, (p, q) in enumerate(zip(x[name], y[name], strict=True)):
            np.testing.assert_array_equal(p, q, err_msg=f"{name}[{i}]")


def _kit_final(spec: TrainSpec) -> Path:
    last = spec.iters_per_epoch * spec.max_epochs
    return spec.run_dir / "snapshots" / f"epoch_iter_{last}.caffemodel"


def test_a_dropout_net_ends_bit_identical_to_caffe_train(caffe, tmp_path):
    spec = _setup(tmp_path / "alexnet-l", "alexnet-l", size=64, crop=0, n_train=26, n_val=10,
                  batch=8, epochs=2)
    train(spec)
    tool, log = _caffe_train(spec)
    _assert_same_blobs(_kit_final(spec), tool)
    _assert_log_matches(spec, log)


def test_a_random_crop_net_ends_bit_identical_to_caffe_train(caffe, tmp_path):
    spec = _setup(tmp_path / "alexnet-h", "alexnet-h", size=256, crop=227, n_train=7,
                  n_val=3, batch=3, epochs=2)
    train(spec)
    tool, _ = _caffe_train(spec)
    _assert_same_blobs(_kit_final(spec), tool)


def test_a_resumed_dropout_run_equals_an_uninterrupted_one(caffe, tmp_path):
    whole = _setup(tmp_path / "whole", "alexnet-l", size=64, crop=0, n_train=26, n_val=10,
                   batch=8, epochs=3)
    train(whole)
    parted = _setup(tmp_path / "parted", "alexnet-l", size=64, crop=0, n_train=26, n_val=10,
                    batch=8, epochs=3)
    # Stopping after epoch 1 leaves what a kill after epoch 1's snapshot leaves.
    train(replace(parted, max_epochs=1))
    resumed = train(parted)
    assert resumed.resumed_from_epoch == 1
    _assert_same_blobs(_kit_final(whole), _kit_final(parted))
    # Every trace column but the last (wall-clock seconds) is identical.
    a, b = ([r.rsplit(",", 1)[0] for r in (s.run_dir / "trace.csv").read_text().splitlines()]
            for s in (whole, parted))
    assert a == b


LR_LINE = re.compile(r"Iteration (\d+), lr = (\S+)")
LOSS_LINE = re.compile(r"Iteration (\d+) \(.*\), loss = (\S+)")


def _assert_log_matches(spec: TrainSpec, log: str) -> None:
    """The kit's iterations.csv holds Caffe's own rate and smoothed loss, line for line."""
    tool_lr = {int(i): float(v) for i, v in LR_LINE.findall(log)}
    tool_loss = {int(i): float(v) for i, v in LOSS_LINE.findall(log)}
    with (spec.run_dir / "iterations.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == sorted(tool_lr) == sorted(tool_loss)
    for row in rows:
        i = int(row["iteration"])
        assert float(row["learning_rate"]) == pytest.approx(tool_lr[i], rel=1e-5)
        assert float(row["smoothed_loss"]) == pytest.approx(tool_loss[i], rel=1e-5)
