#!/usr/bin/env python3
"""What an exact resume costs (not a test: prints figures).

    .venv/bin/python benchmarks/bench_resume.py [--quick]

AlexNet-L (dropout) on synthetic 64 x 64 images: one uninterrupted run, then the same run
stopped after each epoch but the last and resumed. Resuming replays the data layers through
every batch already served (no forward or backward through the net) and sets Caffe's random
state from the snapshot. Prints the training time per epoch, the replay time of each resume
and its cost per replayed batch, and checks that the resumed run ends bit-identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from medtl.datasets.lmdb_writer import shuffled_order, write_lmdb
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, train_net, val_net
from medtl.prototxt import write_text
from medtl.solver import solver_param
from medtl.surgery import read_weights
from medtl.synthetic import blob_images
from medtl.train import driver
from medtl.train.driver import TrainSpec, train

REPLAYS: list[float] = []


def _timed_restore(*args, **kwargs) -> None:
    start = time.perf_counter()
    _restore(*args, **kwargs)
    REPLAYS.append(time.perf_counter() - start)


_restore, driver._restore = driver._restore, _timed_restore


def _lmdb(dest: Path, n: int, seed: int) -> Path:
    images, labels = blob_images(n, 64, seed=seed)
    order = shuffled_order(n, seed)
    write_lmdb(dest, ((int(order[i]), images[i], int(labels[i])) for i in range(n)))
    return dest


def _spec(root: Path, run: str, n_train: int, n_val: int, batch: int, epochs: int) -> TrainSpec:
    body, mean = get_model("alexnet-l").body, (110.0, 110.0, 110.0)
    run_dir = root / run
    run_dir.mkdir(parents=True)
    train_path = write_text(run_dir / "train.prototxt", train_net(
        body, 2, DataSpec(str(root / "train"), batch, mean_value=mean), "AlexNet-L"))
    val_path = write_text(run_dir / "val.prototxt", val_net(
        body, 2, DataSpec(str(root / "val"), batch, mean_value=mean), "AlexNet-L"))
    ipe = -(-n_train // batch)
    solver = write_text(run_dir / "solver.prototxt", solver_param(
        train_net=train_path, test_net=val_path, test_iter=-(-n_val // batch),
        test_interval=ipe, base_lr=0.001, momentum=0.9, weight_decay=0.0005,
        lr_policy="fixed", max_iter=ipe * epochs, snapshot_prefix=run_dir / "unused",
        random_seed=3, display=ipe))
    return TrainSpec(solver=solver, run_dir=run_dir / "kit", iters_per_epoch=ipe,
                     max_epochs=epochs, val_records=n_val, selection="min_val_loss",
                     progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and epochs")
    args = parser.parse_args()
    n_train, n_val, batch, epochs = (200, 50, 25, 3) if args.quick else (1000, 200, 50, 4)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _lmdb(root / "train", n_train, 1)
        _lmdb(root / "val", n_val, 2)
        whole = _spec(root, "whole", n_train, n_val, batch, epochs)
        start = time.perf_counter()
        train(whole)
        per_epoch = (time.perf_counter() - start) / epochs
        print(f"AlexNet-L, {n_train} training images, batch {batch}, {epochs} epochs of "
              f"{whole.iters_per_epoch} iterations: {per_epoch:.2f} s per epoch")
        parted = _spec(root, "parted", n_train, n_val, batch, epochs)
        for stop in range(1, epochs):
            train(replace(parted, max_epochs=stop))
            train(replace(parted, max_epochs=stop + 1))   # the resume, then one epoch
            took = REPLAYS[-1]
            served = stop * (whole.iters_per_epoch + -(-n_val // batch))
            print(f"resume after epoch {stop}: restore + replay {took:.2f} s for {served} "
                  f"batches ({1000 * took / served:.1f} ms per batch, "
                  f"{100 * took / per_epoch:.0f}% of an epoch)")
        last = f"epoch_iter_{whole.iters_per_epoch * epochs}.caffemodel"
        a = read_weights(whole.run_dir / "snapshots" / last)
        b = read_weights(parted.run_dir / "snapshots" / last)
        same = all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k], strict=True))
        print(f"resumed run bit-identical to the uninterrupted one: {same}")


if __name__ == "__main__":
    main()
