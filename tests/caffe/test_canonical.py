"""The checked-in prototxt/ and solvers/ are exactly what the generators produce, and run."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from google.protobuf import text_format

from medtl import generate
from medtl.inspect_net import with_dummy_data
from medtl.protocols import configurations
from medtl.prototxt import read_net


def test_checked_in_files_match_the_generators(repo):
    drift = generate.canonical_drift(repo)
    assert drift == [], "run `.venv/bin/python -m medtl generate`; drifted: " + ", ".join(drift)


def test_every_configuration_has_net_and_solver_files(repo):
    for cfg in configurations():
        paths = generate.canonical_paths(cfg)
        for kind in ("train", "val", "deploy"):
            assert (repo / paths.net_dir / f"{kind}.prototxt").is_file()
        assert (repo / f"solvers/{cfg.paper}/{cfg.study}/{cfg.id}.solver.prototxt").is_file()


def _distinct_train_nets(repo):
    """One train net per (model, policy, classes): the rest differ only in data paths."""
    seen = {}
    for cfg in configurations():
        key = (cfg.model, cfg.policy.name, cfg.num_classes.value, cfg.loss)
        seen.setdefault(key, repo / generate.canonical_paths(cfg).net_dir / "train.prototxt")
    return sorted(seen.values())


@pytest.mark.parametrize("net_path", _distinct_train_nets(generate.REPO),
                         ids=lambda p: f"{p.parent.parent.parent.name}/{p.parent.name}")
def test_every_canonical_train_net_runs_forward_and_backward(caffe, net_path):
    runnable = with_dummy_data(read_net(net_path), net_path, None, batch_size=1)
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as tmp:
        tmp.write(text_format.MessageToString(runnable))
        tmp.flush()
        net = caffe.Net(tmp.name, caffe.TRAIN)
    for layer in runnable.layer:
        # A frozen BatchNorm normalises with its stored statistics, which a fresh net has as
        # zeros; pretrained weights, which every frozen base starts from, give real ones.
        if layer.type == "BatchNorm" and layer.batch_norm_param.use_global_stats:
            _, variance, factor = net.params[layer.name]
            variance.data[...], factor.data[...] = 1, 1
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.normal(0, 1, net.blobs["data"].data.shape)
    net.blobs["label"].data[...] = 0
    losses = net.forward()
    net.backward()
    assert losses and all(np.isfinite(float(v)) for v in losses.values())
    learning = [layer.name for layer in runnable.layer
                if layer.name in net.params and any(p.lr_mult > 0 for p in layer.param)]
    for name in learning:
        assert np.isfinite(net.params[name][0].diff).all(), name
