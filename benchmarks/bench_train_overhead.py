#!/usr/bin/env python3
"""What the kit's driver costs over `caffe train` (not a test: prints figures).

    PYTHONPATH=python .venv/bin/python benchmarks/bench_train_overhead.py [--quick]

One kit-generated AlexNet-L solver (synthetic 64 x 64 images in LMDBs, as the driver's
equivalence test builds it) is trained twice from the same start, each in a fresh process:
by `medtl.train.driver.train` (per epoch: validation, snapshot with sha256 record, trace row)
and by `caffe train --solver S` (Caffe's own test pass every epoch, one snapshot at the end).
Both on the CPU with the same BLAS threads and glog settings, alternating, best of `--repeats`.
Prints both wall times (the driver's with and without the Python start-up) and the ratio; the
target is <= 1.03. The processes' CPU times (user + system) are printed too: on shared cores
they vary less than wall times. `--baseline DIR` also times the driver of another checkout
(its python/ directory, e.g. the code before a change) in the same alternation.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medtl import caffe_env
from medtl.datasets.lmdb_writer import shuffled_order, write_lmdb
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, train_net, val_net
from medtl.prototxt import write_text
from medtl.solver import solver_param
from medtl.synthetic import blob_images

DRIVER = """\
import sys, time
from pathlib import Path
from medtl.train.driver import TrainSpec, train
solver, run_dir, ipe, epochs, n_val = sys.argv[1:6]
start = time.perf_counter()
train(TrainSpec(solver=Path(solver), run_dir=Path(run_dir), iters_per_epoch=int(ipe),
                max_epochs=int(epochs), val_records=int(n_val), selection="min_val_loss",
                chance_loss=0.6931, progress=False))
print(time.perf_counter() - start)
"""


def _lmdb(dest: Path, n: int, seed: int) -> Path:
    images, labels = blob_images(n, 64, seed=seed)
    order = shuffled_order(n, seed)
    write_lmdb(dest, ((int(order[i]), images[i], int(labels[i])) for i in range(n)))
    return dest


def _solver(root: Path, n_train: int, n_val: int, batch: int, epochs: int) -> tuple[Path, int]:
    """A kit-generated AlexNet-L solver (as tests/caffe/test_caffe_train_equivalence.py)."""
    body, mean = get_model("alexnet-l").body, (110.0, 110.0, 110.0)
    train_db, val_db = _lmdb(root / "train_db", n_train, 1), _lmdb(root / "val_db", n_val, 2)
    train_path = write_text(root / "train.prototxt", train_net(
        body, 2, DataSpec(str(train_db), batch, mean_value=mean), "AlexNet-L"))
    val_path = write_text(root / "val.prototxt", val_net(
        body, 2, DataSpec(str(val_db), batch, mean_value=mean), "AlexNet-L"))
    ipe = -(-n_train // batch)
    solver = write_text(root / "solver.prototxt", solver_param(
        train_net=train_path, test_net=val_path, test_iter=-(-n_val // batch),
        test_interval=ipe, base_lr=0.001, momentum=0.9, weight_decay=0.0005,
        lr_policy="step", gamma=0.5, stepsize=ipe, max_iter=ipe * epochs,
        snapshot_prefix=root / "tool" / "tool", random_seed=5, display=20, average_loss=20))
    return solver, ipe


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of a child process."""
    start, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    return time.perf_counter() - start, _cpu() - cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 x 10 iterations")
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads of both")
    parser.add_argument("--baseline", type=Path, help="another checkout's python/ directory")
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.n_val, args.epochs, args.repeats = 80, 16, 2, 1
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), GLOG_logtostderr="1", GLOG_minloglevel="0")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "tool").mkdir()
        solver, ipe = _solver(root, args.n_train, args.n_val, args.batch, args.epochs)
        caffe_cmd = [str(caffe_env.caffe_binary()), "train", f"--solver={solver}"]
        drivers = {"kit driver": env}
        if args.baseline is not None:
            drivers["baseline driver"] = dict(env, PYTHONPATH=str(args.baseline.resolve()))
        walls: dict[str, list[float]] = {name: [] for name in drivers}
        inner: dict[str, list[float]] = {name: [] for name in drivers}
        cpus: dict[str, list[float]] = {name: [] for name in [*drivers, "caffe train"]}
        tool: list[float] = []
        for i in range(args.repeats):
            for name, driver_env in drivers.items():
                run_dir = root / f"{name.split()[0]}{i}"
                wall, cpu, out = _timed([sys.executable, "-c", DRIVER, str(solver),
                                         str(run_dir), str(ipe), str(args.epochs),
                                         str(args.n_val)], driver_env)
                walls[name].append(wall)
                cpus[name].append(cpu)
                inner[name].append(float(out.strip().splitlines()[-1]))
                print(f"repeat {i + 1}: {name} {wall:.1f} s (train() {inner[name][-1]:.1f} s, "
                      f"CPU {cpu:.1f} s)", flush=True)
            wall, cpu, _ = _timed(caffe_cmd, env)
            tool.append(wall)
            cpus["caffe train"].append(cpu)
            print(f"repeat {i + 1}: caffe train {wall:.1f} s (CPU {cpu:.1f} s)", flush=True)
    best_tool = min(tool)
    print(f"AlexNet-L, {args.n_train} training / {args.n_val} validation images (64 x 64), "
          f"batch {args.batch}, {args.epochs} epochs x {ipe} = {args.epochs * ipe} iterations, "
          f"CPU, {args.threads} BLAS thread(s), best of {args.repeats}:")
    best_cpu = min(cpus["caffe train"])
    print(f"  caffe train:                {best_tool:.1f} s  (CPU {best_cpu:.1f} s)")
    for name in drivers:
        print(f"  {name + ', process:':27s} {min(walls[name]):.1f} s  ratio "
              f"{min(walls[name]) / best_tool:.3f}  (CPU {min(cpus[name]):.1f} s, ratio "
              f"{min(cpus[name]) / best_cpu:.3f})")
        print(f"  {name + ', train():':27s} {min(inner[name]):.1f} s  ratio "
              f"{min(inner[name]) / best_tool:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
