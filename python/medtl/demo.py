"""`make demo`: the smallest real end-to-end run on built-in synthetic data.

Generates CifarNet with medtl, writes a synthetic LMDB, trains it with pycaffe's SGDSolver on
the CPU, and prints the training loss falling and the validation accuracy. The experiment
issues replace this with the default study.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medtl import caffe_env
from medtl.data.atomic import atomic_dir
from medtl.data.lmdb_writer import shuffled_order, write_lmdb
from medtl.nets.cifarnet import INPUT_SIZE, cifarnet
from medtl.nets.variants import DataSpec, deploy_net, train_net, val_net
from medtl.prototxt import write_text
from medtl.solver import solver_param
from medtl.synthetic import blob_images

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN, NUM_VAL, BATCH, ITERATIONS, PRINT_EVERY = 2000, 400, 50, 300, 25


def write_dataset(dest: Path, n: int, seed: int) -> tuple[float, ...]:
    """Write the LMDB; returns the per-channel mean of its images."""
    images, labels = blob_images(n, INPUT_SIZE, seed=seed)
    order = shuffled_order(n, seed)
    write_lmdb(dest, ((int(order[i]), images[i], int(labels[i])) for i in range(n)))
    return tuple(round(float(m), 3) for m in images.mean(axis=(0, 2, 3)))


def prepare(run_dir: Path) -> Path:
    """Datasets, nets and solver of the demo in `run_dir`; returns the solver path."""
    # Raw 0-255 intensities minus the training mean, as Caffe's cifar10 examples feed CifarNet.
    mean = write_dataset(run_dir / "train_lmdb", NUM_TRAIN, seed=1)
    write_dataset(run_dir / "val_lmdb", NUM_VAL, seed=2)
    train = DataSpec(str(run_dir / "train_lmdb"), BATCH, mean_value=mean)
    val = DataSpec(str(run_dir / "val_lmdb"), BATCH, mean_value=mean)
    write_text(run_dir / "train.prototxt", train_net(cifarnet, 2, train, "CifarNet"))
    write_text(run_dir / "val.prototxt", val_net(cifarnet, 2, val, "CifarNet"))
    write_text(run_dir / "deploy.prototxt",
               deploy_net(cifarnet, 2, (1, 3, INPUT_SIZE, INPUT_SIZE), "CifarNet"))
    solver = solver_param(
        train_net=run_dir / "train.prototxt", test_net=run_dir / "val.prototxt",
        base_lr=0.01, lr_policy="fixed", momentum=0.9, weight_decay=0.0005,
        max_iter=ITERATIONS, test_iter=NUM_VAL // BATCH, test_interval=ITERATIONS,
        snapshot_prefix=run_dir / "cifarnet", random_seed=1, display=0)
    return write_text(run_dir / "solver.prototxt", solver,
                      header=["medtl demo: CifarNet on synthetic blobs (not a paper setting)"])


def train(solver_path: Path) -> tuple[list[float], float]:
    caffe = caffe_env.caffe()
    caffe_env.set_mode()
    solver = caffe.SGDSolver(str(solver_path))
    losses: list[float] = []
    start = time.time()
    print(f"{'iter':>6} {'train loss':>11} {'s':>6}")
    for it in range(1, ITERATIONS + 1):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
        if it % PRINT_EVERY == 0 or it == 1:
            window = np.mean(losses[-PRINT_EVERY:])
            print(f"{it:>6} {window:>11.4f} {time.time() - start:>6.1f}", flush=True)
    test = solver.test_nets[0]
    test.share_with(solver.net)
    accuracy = float(np.mean([test.forward()["accuracy"] for _ in range(NUM_VAL // BATCH)]))
    solver.net.save(str(solver_path.parent / "cifarnet_final.caffemodel"))
    return losses, accuracy


def main() -> int:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = REPO / "results" / "demo" / f"cifarnet-smoke-{stamp}"
    print(f"medtl demo: CifarNet, {NUM_TRAIN} synthetic 32x32 images, "
          f"{ITERATIONS} SGD iterations on the CPU (pycaffe {caffe_env.caffe().__version__})")
    with atomic_dir(dest) as run_dir:
        solver_path = prepare(run_dir)
        losses, accuracy = train(solver_path)
    first, last = np.mean(losses[:PRINT_EVERY]), np.mean(losses[-PRINT_EVERY:])
    print(f"training loss fell from {first:.3f} to {last:.3f}; "
          f"validation accuracy {accuracy:.3f} on {NUM_VAL} held-out images")
    print(f"run directory: {dest}")
    if not last < first:
        print("error: the training loss did not fall", file=sys.stderr)
        return 1
    return 0
