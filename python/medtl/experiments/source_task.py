"""A synthetic source task, so transfer learning can be shown where ImageNet weights cannot be
downloaded: the kit pre-trains a network on it, then transplants it like a model-zoo model.

The task: classify textured images by the shape drawn on them (disk, ring, bar, cross, none),
at the model's input size. Like ImageNet for the medical studies it is unrelated to the target
labels, but it teaches the first layers blobs, edges and contrast on textured backgrounds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medtl import io
from medtl.datasets.lmdb_writer import shuffled_order, write_lmdb
from medtl.experiments.spec import SourceTask
from medtl.locks import claim, describe
from medtl.nets.registry import ModelSpec
from medtl.nets.variants import DataSpec, deploy_net, train_net, val_net
from medtl.prototxt import write_text
from medtl.solver import solver_param

SHAPES = ("none", "disk", "ring", "bar", "cross")


def shape_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 n x 3 x size x size, labels) with every class equally often."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(SHAPES)
    yy, xx = (np.mgrid[0:size, 0:size] / size).astype(np.float32)
    out = np.empty((n, 3, size, size), np.uint8)
    for i, label in enumerate(labels):
        base = rng.uniform(60, 160)
        img = base + rng.normal(0, 12, (3, size, size)).astype(np.float32)
        cy, cx = rng.uniform(0.3, 0.7, 2)
        r = rng.uniform(0.08, 0.2)
        d = np.hypot(yy - cy, xx - cx)
        angle = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        mask = {
            "none": np.zeros_like(d, bool),
            "disk": d < r,
            "ring": (d < r) & (d > 0.6 * r),
            "bar": (np.abs(u) < 1.5 * r) & (np.abs(v) < 0.3 * r),
            "cross": ((np.abs(u) < 1.3 * r) & (np.abs(v) < 0.25 * r))
            | ((np.abs(v) < 1.3 * r) & (np.abs(u) < 0.25 * r)),
        }[SHAPES[label]]
        img[:, mask] += rng.choice([-1, 1]) * rng.uniform(35, 70)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out, labels


def pretrain(model: ModelSpec, dest: Path, task: SourceTask,
             *, progress: bool = True) -> tuple[Path, Path]:
    """Train `model` on the source task once; returns (deploy definition, caffemodel).

    `dest/source.caffemodel` appears only when training is complete; an interrupted
    pre-training resumes (the LMDBs are written atomically, the driver resumes training).
    """
    definition, weights = dest / "deploy.prototxt", dest / "source.caffemodel"
    if weights.is_file():
        return definition, weights
    with claim(dest, f"source model {dest.name}", wait_s=math.inf,
               on_wait=lambda who: print(f"  waiting for source model {dest.name}: being "
                                         f"trained by {describe(who)}", flush=True)):
        if not weights.is_file():
            _pretrain(model, dest, task, progress)
    return definition, weights


def _pretrain(model: ModelSpec, dest: Path, task: SourceTask, progress: bool) -> None:
    from medtl.train.driver import TrainSpec, train

    definition, weights = dest / "deploy.prototxt", dest / "source.caffemodel"

    size, classes = model.crop_size, len(SHAPES)
    n_val = task.images // 5
    images, labels = shape_images(task.images, size, task.seed)
    order = shuffled_order(task.images, task.seed)
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "train_lmdb").exists():
        write_lmdb(dest / "train_lmdb", ((int(order[i]), images[i], int(labels[i]))
                                         for i in range(n_val, task.images)))
    if not (dest / "val_lmdb").exists():
        write_lmdb(dest / "val_lmdb", ((i, images[i], int(labels[i])) for i in range(n_val)))
    mean = tuple(round(float(m), 3) for m in images.mean(axis=(0, 2, 3)))
    name = f"{model.name}-source"
    train_path = write_text(dest / "train.prototxt", train_net(
        model.body, classes, DataSpec(str(dest / "train_lmdb"), task.batch_size,
                                      mean_value=mean), name))
    val_path = write_text(dest / "val.prototxt", val_net(
        model.body, classes, DataSpec(str(dest / "val_lmdb"), task.batch_size,
                                      mean_value=mean), name))
    ipe = (task.images - n_val) // task.batch_size
    solver = write_text(dest / "solver.prototxt", solver_param(
        train_net=train_path, test_net=val_path, test_iter=-(-n_val // task.batch_size),
        test_interval=ipe,
        base_lr=task.base_lr, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
        max_iter=ipe * task.epochs, snapshot_prefix=dest / "unused", random_seed=task.seed))
    io.write_json(dest / "task.json", {
        "task": "synthetic shapes", "classes": list(SHAPES), "images": task.images,
        "epochs": task.epochs, "batch_size": task.batch_size, "base_lr": task.base_lr,
        "seed": task.seed, "model": model.name, "input_size": size, "mean": mean})
    result = train(TrainSpec(solver=solver, run_dir=dest / "run", iters_per_epoch=ipe,
                             max_epochs=task.epochs, val_records=n_val,
                             selection="min_val_loss", progress=progress))
    write_text(definition, deploy_net(model.body, classes, (1, 3, size, size), name))
    io.copy_file(result.selected_weights, weights)
