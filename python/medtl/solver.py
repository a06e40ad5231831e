"""Caffe solvers from a paper's hyperparameters.

A `SolverRecipe` holds the paper's values in the paper's units (epochs, batch size) with
their provenance; `build_solver` converts them to Caffe's units (iterations) from the actual
training-set size, so the same recipe gives the right solver for every fold and data fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from medtl.caffe_env import caffe_pb2
from medtl.provenance import Sourced, assumed, derived


@dataclass(frozen=True)
class SolverRecipe:
    """A paper's optimisation settings, each value with its provenance.

    lr_policy "step" with `step_epochs` gives stepsize = step_epochs x iterations per epoch
    (Shin: x0.1 every 10 or 30 epochs; Tajbakhsh: x0.95 every epoch). "fixed" ignores gamma.
    """

    name: str
    type: Sourced              # "SGD", "Adam", "RMSProp"
    base_lr: Sourced
    lr_policy: Sourced         # "step" or "fixed"
    gamma: Sourced
    step_epochs: Sourced
    momentum: Sourced
    weight_decay: Sourced
    batch_size: Sourced
    max_epochs: Sourced
    val_batch_size: Sourced
    momentum2: Sourced | None = None   # Adam's beta2
    delta: Sourced | None = None       # Adam/RMSProp epsilon
    rms_decay: Sourced | None = None

    def values(self) -> dict[str, Sourced]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), Sourced)}


@dataclass(frozen=True)
class SolverPlan:
    """A recipe resolved for one training set: Caffe's iteration counts and their sources."""

    recipe: SolverRecipe
    train_size: int
    val_size: int
    iters_per_epoch: Sourced
    max_iter: Sourced
    stepsize: Sourced | None
    test_iter: Sourced
    test_interval: Sourced
    snapshot: Sourced

    def provenance(self) -> dict[str, Sourced]:
        out = self.recipe.values()
        out.update(iters_per_epoch=self.iters_per_epoch, max_iter=self.max_iter,
                   test_iter=self.test_iter, test_interval=self.test_interval,
                   snapshot=self.snapshot)
        if self.stepsize is not None:
            out["stepsize"] = self.stepsize
        return out


def plan_solver(recipe: SolverRecipe, train_size: int, val_size: int) -> SolverPlan:
    if train_size <= 0:
        raise ValueError(f"solver {recipe.name}: training-set size must be positive")
    batch = recipe.batch_size.value
    ipe = math.ceil(train_size / batch)
    per_epoch = derived(ipe, f"ceil({train_size} training samples / batch {batch})")
    max_iter = derived(recipe.max_epochs.value * ipe,
                       f"{recipe.max_epochs.value} epochs x {ipe} iterations")
    stepsize = None
    if recipe.lr_policy.value == "step":
        stepsize = derived(int(recipe.step_epochs.value * ipe),
                           f"{recipe.step_epochs.value} epoch(s) x {ipe} iterations")
    vb = recipe.val_batch_size.value
    test_iter = derived(max(1, math.ceil(val_size / vb)),
                        f"ceil({val_size} validation samples / batch {vb}); the kit's driver "
                        f"scores each of the {val_size} records once, `caffe train`'s own "
                        "test pass also rereads the first ones to fill the last batch")
    test_interval = assumed(ipe, "validation once per epoch, so the papers' snapshot selection "
                                 "(lowest val loss / highest val AUC) sees every epoch")
    snapshot = assumed(ipe, "a snapshot per epoch, so the selected epoch's weights are kept")
    return SolverPlan(recipe, train_size, val_size, per_epoch, max_iter, stepsize, test_iter,
                      test_interval, snapshot)


def build_solver(plan: SolverPlan, *, train_net: Path | str, test_net: Path | str | None,
                 snapshot_prefix: Path | str, random_seed: int, gpu: bool = False):
    """The SolverParameter of `plan`. Paths are written as given (absolute for runs)."""
    r = plan.recipe
    ipe = plan.iters_per_epoch.value
    msg = solver_param(
        train_net=str(train_net), type=r.type.value, base_lr=r.base_lr.value,
        lr_policy=r.lr_policy.value, momentum=r.momentum.value,
        weight_decay=r.weight_decay.value, max_iter=plan.max_iter.value,
        snapshot=plan.snapshot.value, snapshot_prefix=str(snapshot_prefix),
        random_seed=random_seed, display=max(1, ipe // 10), average_loss=max(1, ipe // 10),
        solver_mode=caffe_pb2().SolverParameter.GPU if gpu else caffe_pb2().SolverParameter.CPU)
    if r.lr_policy.value == "step":
        msg.gamma = r.gamma.value
        msg.stepsize = plan.stepsize.value
    if test_net is not None:
        msg.test_net.append(str(test_net))
        msg.test_iter.append(plan.test_iter.value)
        msg.test_interval = plan.test_interval.value
        msg.test_initialization = False
    for name in ("momentum2", "delta", "rms_decay"):
        value = getattr(r, name)
        if value is not None:
            setattr(msg, name, value.value)
    return msg


def solver_param(**fields_: Any):
    """A SolverParameter from keyword fields; Path values are made absolute.

    Caffe resolves relative paths against the working directory of whoever runs it, so the
    kit always writes absolute ones into the solvers it runs.
    """
    msg = caffe_pb2().SolverParameter()
    fields_.setdefault("solver_mode", msg.CPU)
    for key, value in fields_.items():
        if isinstance(value, Path):
            value = str(value.resolve())
        if key in ("test_net", "test_iter"):
            getattr(msg, key).append(value)
        elif key == "stepvalue":
            msg.stepvalue.extend(value)
        else:
            setattr(msg, key, value)
    return msg
