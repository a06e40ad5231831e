"""Boit & Zeng 2019's protocol in Caffe: the frozen base stays frozen (BatchNorm statistics
included), fine-tuning trains on augmented copies and feature extraction on plain images (the
poster's result headings), and the optimisers the poster names are configurations whose Caffe
updates equal Keras's."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from spec_helpers import spec_from

from medtl import generate
from medtl.config import ConfigError
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.experiments.plan import load_plan
from medtl.experiments.report.context import read_csv
from medtl.finetune import layer_rates
from medtl.generate import DataPaths, RunPaths, configuration_files
from medtl.nets.registry import get_model
from medtl.paths import REPO
from medtl.protocols import configurations
from medtl.prototxt import read_net, read_solver, write_text
from medtl.provenance import assumed
from medtl.solver import build_solver, plan_solver
from medtl.studies.boit2019 import protocol
from medtl.surgery import random_weights

CHEST_SPEC = REPO / "experiments/boit2019/chestxray14_binary.yaml"
OPTIMISER_SPEC = REPO / "experiments/boit2019/chestxray14_binary_optimisers.yaml"
FE, FT = "densenet121-boit_fe", "densenet121-boit_ft"
# policy -> Caffe solver type, base_lr, momentum, momentum2, delta, rms_decay
OPTIMISERS = {
    "fe": ("Adam", 1e-3, 0.9, 0.999, 1e-7, None),
    "fe-sgd": ("SGD", 1e-2, 0.0, None, None, None),
    "fe-rmsprop": ("RMSProp", 1e-3, 0.0, None, 1e-7, 0.9),
    "ft": ("Adam", 1e-5, 0.9, 0.999, 1e-7, None),
    "ft-sgd": ("SGD", 1e-4, 0.9, None, None, None),
    "ft-rmsprop": ("RMSProp", 1e-5, 0.0, None, 1e-7, 0.9),
}


def _cfg(cid: str):
    return next(c for c in configurations("boit2019") if c.id == cid)


def _batchnorms(net) -> list:
    return [layer for layer in net.layer if layer.type == "BatchNorm"]


# ------------------------------------------------------------------ the frozen base

@pytest.mark.parametrize("cid, frozen", [(FE, 121), (FT, 120)])
def test_frozen_batchnorm_layers_use_their_stored_statistics(cid, frozen):
    """Below the first learning layer every BatchNorm runs on its stored statistics
    (use_global_stats), as a frozen Keras BatchNormalization runs in inference mode; all
    three of its blobs carry lr_mult 0 (BVLC convention)."""
    cfg = _cfg(cid)
    nets = generate.build_nets(cfg, DataPaths("train.txt", "val.txt"))
    canonical = read_net(REPO / generate.canonical_paths(cfg).net_dir / "train.prototxt")
    for kind, net in [*nets.items(), ("canonical train", canonical)]:
        bns = _batchnorms(net)
        assert len(bns) == 121, kind
        for layer in bns:
            assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(0, 0)] * 3
        fixed = [b.name for b in bns if b.batch_norm_param.use_global_stats]
        assert len(fixed) == frozen, kind
        if frozen == 120:   # the final BatchNorm lies above Boit's boundary: it learns
            last = bns[-1]
            assert last.name == "conv5_blk/bn" and last.name not in fixed
            assert not last.batch_norm_param.HasField("use_global_stats")
    text = (REPO / generate.canonical_paths(cfg).net_dir / "train.prototxt").read_text()
    assert "use_global_stats" in text and "inference mode" in text


def _tiny_hdf5(folder: Path, name: str, count: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / f"{name}.h5", "w") as f:
        f["data"] = rng.normal(0, 1, (count, 3, 32, 32)).astype(np.float32)
        f["label"] = (np.arange(count) % 2).astype(np.float32)
    (folder / f"{name}.txt").write_text(f"{folder / f'{name}.h5'}\n")
    return str(folder / f"{name}.txt")


def _pretrained(caffe, deploy: Path, dest: Path) -> dict[str, list[np.ndarray]]:
    """Stand-in pretrained weights whose BatchNorm statistics look trained (not the
    zeros of a fresh net), so any overwrite shows."""
    random_weights(deploy, dest, seed=3)
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(dest))
    rng = np.random.default_rng(4)
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type == "BatchNorm":
            mean, var, factor = net.params[name]
            mean.data[...] = rng.normal(0, 0.5, mean.data.shape)
            var.data[...] = rng.uniform(0.5, 2.0, var.data.shape)
            factor.data[...] = 1.0
    net.save(str(dest))
    return {k: [b.data.copy() for b in v] for k, v in net.params.items()}


@pytest.mark.slow
@pytest.mark.parametrize("cid", [FE, FT])
def test_train_iterations_leave_every_frozen_blob_bit_identical(caffe, tmp_path, cid):
    """The configuration's own files (tiny 32 x 32 input, batch 2): after a few TRAIN
    iterations every frozen blob, BatchNorm statistics included, equals the initial weights;
    the classifier (and, fine-tuning, conv5_16/x2 and the final BatchNorm) moved."""
    cfg = _cfg(cid)
    two = assumed(2, "a test")
    cfg = replace(cfg, solver=replace(cfg.solver, batch_size=two, val_batch_size=two))
    data = DataPaths(_tiny_hdf5(tmp_path / "train", "train", 4, 1),
                     _tiny_hdf5(tmp_path / "val", "val", 2, 2), backend="hdf5")
    paths = RunPaths(net_dir=str(tmp_path / "net"), solver_file=str(tmp_path / "solver.prototxt"),
                     data=data, snapshot_prefix=str(tmp_path / "snapshots" / "s"))
    for rel, text in configuration_files(cfg, paths, plan_solver(cfg.solver, 4, 2)).items():
        Path(rel).parent.mkdir(parents=True, exist_ok=True)
        Path(rel).write_text(text)
    init = _pretrained(caffe, tmp_path / "net" / "deploy.prototxt", tmp_path / "init.caffemodel")
    (tmp_path / "snapshots").mkdir()
    solver = caffe.get_solver(paths.solver_file)
    solver.net.copy_from(str(tmp_path / "init.caffemodel"))
    solver.step(3)
    train = read_net(tmp_path / "net" / "train.prototxt")
    fixed = {b.name for b in _batchnorms(train) if b.batch_norm_param.use_global_stats}
    frozen = fixed | {r.layer for r in layer_rates(cfg.policy, get_model(cfg.model), train)
                      if r.role == "frozen"}
    moved = {name for name, blobs in solver.net.params.items()
             if any(not np.array_equal(b.data, init[name][i]) for i, b in enumerate(blobs))}
    learning = {"fc_hidden_new", "fc6_new"} | (
        set() if cid == FE else {"conv5_16/x2", "conv5_blk/bn", "conv5_blk/scale"})
    assert moved == learning, f"moved but frozen: {sorted(moved - learning)[:4]}"
    assert not frozen & moved
    assert len(fixed) == (121 if cid == FE else 120)


# ------------------------------------------------------------------ augmentation

def _chest_spec(tmp_path: Path, name: str, **changes) -> Path:
    options = changes.pop("options", {})
    return spec_from(tmp_path, name, CHEST_SPEC, dataset={
        "builder": "chestxray14", "source": "synthetic",
        "phantom": {"patients": 6, "max_images_per_patient": 1, "size": 48, "seed": 1,
                    "test_fraction": 0.35},
        "options": {"task": "binary", "image_size": 40, "crop_size": 32, "val_fraction": 0.34,
                    **options}}, **changes)


def _lmdb(path: str) -> tuple[np.ndarray, np.ndarray]:
    records = list(read_lmdb(Path(path)))
    return (np.stack([image for _, image, _ in records]),
            np.array([label for _, _, label in records]))


def test_fine_tuning_trains_on_augmented_copies_and_feature_extraction_on_plain_images(
        results_root, tmp_path):
    plan = load_plan(_chest_spec(tmp_path, "aug"))
    study = plan.study
    assert study.config.plain_train and study.config.augmented_train
    fe, ft = (next(c for c in plan.experiment.configurations if c.id == i) for i in (FE, FT))
    assert protocol.augmentation(fe).value is False
    assert "Feature extraction without Data Augmentation" in protocol.augmentation(fe).source
    assert protocol.augmentation(ft).value is True
    assert "Fine-tuning with Data Augmentation" in protocol.augmentation(ft).source
    plain = study.fold_data_for(fe, 1, 1.0, 1)
    augmented = study.fold_data_for(ft, 1, 1.0, 1)
    assert Path(plain.train).name == "train"                    # 8-bit LMDB folders
    assert Path(augmented.train).name == "train_augmented"
    assert (plain.val, plain.test) == (augmented.val, augmented.test)   # never augmented
    copies = study.config.train_augmented_copies
    assert augmented.train_size == copies * plain.train_size
    x_plain, y_plain = _lmdb(plain.train)
    x_aug, y_aug = _lmdb(augmented.train)
    plain_index = {r["image"]: int(r["rank"]) for r in read_csv(
        study.dataset_dir / "train_index.csv")}
    aug_index = read_csv(study.dataset_dir / "train_augmented_index.csv")
    assert {r["image"] for r in aug_index} == set(plain_index)
    for row in aug_index:
        rank, base = int(row["rank"]), plain_index[row["image"]]
        assert y_aug[rank] == y_plain[base]
        assert not np.array_equal(x_aug[rank], x_plain[base])   # a random transform
    notes = json.loads((study.dataset_dir / "manifest.json").read_text())["notes"]
    assert "train_augmented" in notes["augmentation"]
    header = (REPO / generate.canonical_paths(ft).net_dir / "train.prototxt").read_text()
    assert "Fine-tuning with Data Augmentation" in header


def test_a_spec_builds_only_the_training_sets_its_configurations_use(results_root, tmp_path):
    fe_only = load_plan(_chest_spec(tmp_path, "fe", configurations=[FE])).study.config
    assert fe_only.plain_train and not fe_only.augmented_train
    ft_only = load_plan(_chest_spec(tmp_path, "ft", configurations=[FT])).study.config
    assert ft_only.augmented_train and not ft_only.plain_train
    with pytest.raises(ConfigError, match="Fine-tuning with Data Augmentation"):
        load_plan(_chest_spec(tmp_path, "no_aug", options={"augmented_train": False}))
    with pytest.raises(ConfigError, match="Feature extraction without Data Augmentation"):
        load_plan(_chest_spec(tmp_path, "no_plain", options={"plain_train": False}))


def test_unstated_augmentation_values_are_marked_assumed():
    from medtl.config import protocol_values
    from medtl.studies.boit2019.dataset import ChestXray14Config

    values = protocol_values(ChestXray14Config())
    for key in ("train_augmented_copies", "augment_crop", "rotation_range",
                "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
                "horizontal_flip", "fill_mode"):
        assert values[key].get("assumed"), key


# ------------------------------------------------------------------ optimisers

def test_the_posters_optimisers_are_configurations_with_keras_settings():
    by_policy = {c.policy.name: c for c in configurations("boit2019")}
    assert set(by_policy) == set(OPTIMISERS)
    for name, (kind, lr, momentum, momentum2, delta, rms_decay) in OPTIMISERS.items():
        cfg = by_policy[name]
        s = cfg.solver
        assert s.type.value == kind and "Adam, SGD, RMSprop" in s.type.source, name
        assert cfg.policy.base_lr.value == lr and s.base_lr.value == lr
        assert s.base_lr.is_assumed and "Keras" in s.base_lr.assumed
        for field, want in (("momentum", momentum), ("momentum2", momentum2),
                            ("delta", delta), ("rms_decay", rms_decay)):
            got = getattr(s, field)
            assert (got.value if got is not None else None) == want, (name, field)
            assert got is None or got.is_assumed, (name, field)
        assert protocol.augmentation(cfg).value is name.startswith("ft")
        solver = read_solver(REPO / generate.canonical_paths(cfg).solver_file)
        assert solver.type == kind and solver.base_lr == pytest.approx(lr)
        assert solver.momentum == pytest.approx(momentum)
        if momentum2 is not None:
            assert solver.momentum2 == pytest.approx(momentum2)
        if delta is not None:
            assert solver.delta == pytest.approx(delta)
        if rms_decay is not None:
            assert solver.rms_decay == pytest.approx(rms_decay)
    default = load_plan(CHEST_SPEC).experiment.configurations
    assert [c.id for c in default] == [FE, FT]
    every = load_plan(OPTIMISER_SPEC).experiment.configurations
    assert {c.policy.name for c in every} == set(OPTIMISERS)


def _keras_steps(recipe, w, b, x, y, steps: int):
    """Keras 2.2.4's SGD / RMSprop / Adam updates (keras/optimizers.py) of a linear layer
    under a Euclidean loss, in float64."""
    kind, lr = recipe.type.value, recipe.base_lr.value
    params = [w.astype(np.float64), b.astype(np.float64)]
    state = [[np.zeros_like(p) for p in params] for _ in range(2)]
    for t in range(1, steps + 1):
        err = (x @ params[0].T + params[1] - y) / len(x)
        grads = [err.T @ x, err.sum(0)]
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if kind == "SGD":
                state[0][i] = recipe.momentum.value * state[0][i] - lr * g
                params[i] = p + state[0][i]
            elif kind == "RMSProp":
                rho, eps = recipe.rms_decay.value, recipe.delta.value
                state[0][i] = rho * state[0][i] + (1 - rho) * g * g
                params[i] = p - lr * g / (np.sqrt(state[0][i]) + eps)
            else:
                b1, b2, eps = recipe.momentum.value, recipe.momentum2.value, recipe.delta.value
                lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                state[0][i] = b1 * state[0][i] + (1 - b1) * g
                state[1][i] = b2 * state[1][i] + (1 - b2) * g * g
                params[i] = p - lr_t * state[0][i] / (np.sqrt(state[1][i]) + eps)
    return params


@pytest.mark.slow
@pytest.mark.parametrize("policy", list(OPTIMISERS))
def test_caffe_updates_equal_keras_updates(caffe, tmp_path, policy):
    """Each configuration's solver, run by Caffe on a linear layer, moves the weights as
    Keras's optimiser of the same name and settings does."""
    recipe = next(c for c in configurations("boit2019") if c.policy.name == policy).solver
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[4, 3]))
    n.target = caffe.layers.Input(shape=dict(dim=[4, 2]))
    n.fc = caffe.layers.InnerProduct(n.data, num_output=2, param=[dict(lr_mult=1)] * 2,
                                     weight_filler=dict(type="gaussian", std=0.5),
                                     bias_filler=dict(type="constant", value=0.1))
    n.loss = caffe.layers.EuclideanLoss(n.fc, n.target)
    net = write_text(tmp_path / "net.prototxt", n.to_proto())
    msg = build_solver(plan_solver(recipe, 4, 4), train_net=net, test_net=None,
                       snapshot_prefix=tmp_path / "s", random_seed=1)
    solver = caffe.get_solver(str(write_text(tmp_path / "solver.prototxt", msg)))
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (4, 3)), rng.normal(0, 1, (4, 2))
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["target"].data[...] = y
    w0, b0 = (p.data.copy() for p in solver.net.params["fc"])
    solver.step(3)
    w, b = _keras_steps(recipe, w0, b0, x, y, 3)
    for got, want, start in zip(solver.net.params["fc"], (w, b), (w0, b0), strict=True):
        np.testing.assert_allclose(got.data - start, want - start, rtol=1e-3, atol=3e-7)
