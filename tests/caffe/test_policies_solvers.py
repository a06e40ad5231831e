"""Fine-tuning policies and solvers reproduce the papers' numbers, checked in real Caffe."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from medtl import generate
from medtl.finetune import PolicyError, apply_policy, layer_rates
from medtl.inspect_net import InspectError, inspect
from medtl.nets.registry import get_model
from medtl.nets.variants import deploy_net
from medtl.protocols import configurations
from medtl.prototxt import write_text
from medtl.provenance import paper
from medtl.solver import build_solver, plan_solver
from medtl.studies.shin2016 import protocol as shin2016
from medtl.studies.tajbakhsh2016 import protocol as tajbakhsh2016

# Tajbakhsh 2016 Table II, as printed: weights' learning rate of conv1 ... fc8 per level.
TABLE_II = {
    "conv1-fc8": [0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.01],
    "conv2-fc8": [0, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.01],
    "conv3-fc8": [0, 0, 0.001, 0.001, 0.001, 0.001, 0.001, 0.01],
    "conv4-fc8": [0, 0, 0, 0.001, 0.001, 0.001, 0.001, 0.01],
    "conv5-fc8": [0, 0, 0, 0, 0.001, 0.001, 0.001, 0.01],
    "fc6-fc8": [0, 0, 0, 0, 0, 0.001, 0.001, 0.01],
    "fc7-fc8": [0, 0, 0, 0, 0, 0, 0.001, 0.01],
    "fc8": [0, 0, 0, 0, 0, 0, 0, 0.01],
    "scratch": [0.001] * 8,
}
ALEXNET_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8_new"]


@pytest.fixture(scope="module")
def canonical_tree(tmp_path_factory):
    """The Tajbakhsh polyp and Shin LN files, written as `medtl generate` writes them."""
    root = tmp_path_factory.mktemp("canonical")
    for cfg in configurations():
        if (cfg.paper, cfg.study) in (("tajbakhsh2016", "polyp"), ("shin2016", "ln_mediastinum")):
            for rel, text in generate.configuration_files(cfg).items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(text)
    return root


@pytest.mark.parametrize("level", list(TABLE_II))
def test_inspect_reproduces_tajbakhsh_table_ii(canonical_tree, level):
    solver = canonical_tree / f"solvers/tajbakhsh2016/polyp/alexnet-h_{level}.solver.prototxt"
    ins = inspect(solver)
    rows = {r.name: r for r in ins.layers}
    assert ins.solver_fields["momentum"] == 0.9
    assert ins.solver_fields["gamma"] == 0.95
    assert ins.solver_fields["lr_policy"] == "step"
    assert ins.solver_fields["stepsize"] == ins.iters_per_epoch == math.ceil(80_000 / 128)
    for layer, expected in zip(ALEXNET_LAYERS, TABLE_II[level], strict=True):
        weight_lr = rows[layer].effective_lr["epoch 0"]
        assert weight_lr == pytest.approx(expected, rel=1e-6, abs=0), layer
        bias_lr = ins.solver_fields["base_lr"] * rows[layer].mults[1][0]
        assert bias_lr == pytest.approx(2 * expected, rel=1e-6, abs=0), f"{layer} bias"
        assert rows[layer].learning == (expected > 0)
    assert "Tajbakhsh 2016 Table II" in rows["fc8_new"].provenance
    assert "assumed" in ins.solver_provenance["weight_decay"]


def test_learning_rate_falls_by_gamma_once_per_epoch(canonical_tree):
    solver = canonical_tree / "solvers/tajbakhsh2016/polyp/alexnet-h_scratch.solver.prototxt"
    ins = inspect(solver, epochs=(0, 1, 2, 10), train_size=1000)
    assert ins.iters_per_epoch == math.ceil(1000 / 128)
    lrs = next(r for r in ins.layers if r.name == "conv1").effective_lr
    for epoch in (0, 1, 2, 10):
        assert lrs[f"epoch {epoch}"] == pytest.approx(0.001 * 0.95 ** epoch, rel=1e-6)


def test_shin_tl_runs_pretrained_layers_ten_times_slower(canonical_tree):
    ins = inspect(canonical_tree / "solvers/shin2016/ln_mediastinum/alexnet-h_tl.solver.prototxt")
    rows = {r.name: r for r in ins.layers}
    assert rows["conv1"].effective_lr["epoch 0"] == pytest.approx(0.001)
    assert rows["fc7"].effective_lr["epoch 0"] == pytest.approx(0.001)
    assert rows["fc8_new"].effective_lr["epoch 0"] == pytest.approx(0.01)
    imnet = inspect(canonical_tree
                    / "solvers/shin2016/ln_mediastinum/alexnet-h_imnet.solver.prototxt")
    learning = [r.name for r in imnet.layers if r.learning]
    assert learning == ["fc8_new"]
    assert imnet.trainable_params == 4096 * 2 + 2


def test_solver_iterations_follow_the_training_set():
    plan = plan_solver(shin2016.LN_SOLVER, train_size=1234, val_size=100)
    assert plan.iters_per_epoch.value == math.ceil(1234 / 50)
    assert plan.max_iter.value == 30 * math.ceil(1234 / 50)
    assert plan.stepsize.value == 10 * math.ceil(1234 / 50)
    assert plan.test_iter.value == 2
    solver = build_solver(plan, train_net="t.prototxt", test_net="v.prototxt",
                          snapshot_prefix="s", random_seed=3)
    assert (solver.stepsize, solver.max_iter, solver.random_seed) == (250, 750, 3)
    with pytest.raises(ValueError, match="training-set size must be positive"):
        plan_solver(shin2016.LN_SOLVER, train_size=0, val_size=1)


def test_a_level_naming_an_unknown_layer_is_refused(caffe):
    model = get_model("alexnet-h")
    net = deploy_net(model.body, 2, (1, 3, 227, 227), "AlexNet")
    bad = replace(tajbakhsh2016.fine_tuned("conv3"),
                  first_learning=paper("conv9", "a test"))
    with pytest.raises(PolicyError, match="alexnet-h has no layer or layer group 'conv9'"):
        layer_rates(bad, model, net)
    with pytest.raises(PolicyError, match="init must be one of"):
        replace(bad, init=paper("uniform", "a test"))


@pytest.mark.slow
def test_one_sgd_step_moves_learning_layers_and_leaves_frozen_ones_bit_identical(
        caffe, tmp_path):
    """conv3-fc8 on AlexNet-H: conv1, conv2 frozen; every later layer moves."""
    model = get_model("alexnet-h")
    policy = tajbakhsh2016.fine_tuned("conv3")
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[2, 3, 227, 227]))
    n.label = caffe.layers.Input(shape=dict(dim=[2]))
    heads = model.body(n, n.data, 2, deploy=False)
    n.loss = caffe.layers.SoftmaxWithLoss(heads[0].top, n.label)
    net_path = write_text(tmp_path / "net.prototxt",
                          apply_policy(policy, model, n.to_proto()))
    plan = plan_solver(tajbakhsh2016.SOLVER, train_size=2, val_size=1)
    solver_msg = build_solver(plan, train_net=net_path, test_net=None,
                              snapshot_prefix=tmp_path / "s", random_seed=5)
    solver_msg.base_lr = 0.1  # a large step, so every learning layer visibly moves
    solver = caffe.SGDSolver(str(write_text(tmp_path / "solver.prototxt", solver_msg)))
    rng = np.random.default_rng(0)
    solver.net.blobs["data"].data[...] = rng.normal(0, 50, (2, 3, 227, 227))
    solver.net.blobs["label"].data[...] = [0, 1]
    for p in solver.net.params.values():  # non-zero biases so ReLUs pass gradient
        p[1].data[...] = 0.1
    before = {k: [b.data.copy() for b in v] for k, v in solver.net.params.items()}
    solver.net.forward()
    solver.net.backward()
    solver.apply_update()
    for name, blobs in solver.net.params.items():
        changed = [not np.array_equal(b.data, before[name][i]) for i, b in enumerate(blobs)]
        if name in ("conv1", "conv2"):
            assert not any(changed), f"frozen {name} moved"
        else:
            assert all(changed), f"learning {name} did not move"


def test_inspect_names_the_problem_with_bad_input(tmp_path):
    with pytest.raises(InspectError, match="no such file"):
        inspect(tmp_path / "missing.prototxt")
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: 'x' type: 'Convolution' unknown_field: 3 }\n")
    with pytest.raises(InspectError, match="neither a Caffe net nor a solver"):
        inspect(bad)


def test_every_configuration_separates_paper_values_from_assumptions():
    configs = configurations()
    assert len(configs) == 84   # 80, and Boit 2019's strategies under SGD and RMSprop (issue 10)
    for cfg in configs:
        prov = cfg.provenance()
        for key, value in prov.items():
            assert value.describe(), f"{cfg.paper}/{cfg.id}: {key} has no provenance"
    table_ii = next(c for c in configs if c.paper == "tajbakhsh2016" and c.id == "alexnet-h_fc8")
    assert table_ii.provenance()["solver.gamma"].source == "Tajbakhsh 2016 Table II"
    # issue 10 item 6: Caffe's random crop, mean subtraction and (no) mirroring are assumed too
    assert set(table_ii.assumptions()) == {"solver.weight_decay", "solver.batch_size",
                                           "solver.max_epochs", "solver.val_batch_size",
                                           "policy.decay_mults", "transform.crop_size",
                                           "transform.mean_file", "transform.mirror"}


def test_an_unknown_model_is_refused_with_the_known_names():
    from medtl.nets.registry import UnknownModelError

    with pytest.raises(UnknownModelError) as err:
        get_model("resnet50")
    assert "unknown model 'resnet50'; known models: cifarnet, alexnet-h" in str(err.value)
