"""pycaffe works on the CPU, and agrees with the `caffe` tool of the same build."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medtl import caffe_env
from medtl.datasets.lmdb_writer import read_lmdb, shuffled_order, write_lmdb
from medtl.nets.cifarnet import cifarnet
from medtl.nets.variants import DataSpec, train_net
from medtl.prototxt import write_text
from medtl.solver import solver_param
from medtl.synthetic import blob_images


def test_pycaffe_is_the_pinned_build_and_computes_in_cpu_mode(caffe, tmp_path):
    info = caffe_env.build_info()
    assert caffe.__version__ == "1.0.0"
    assert info["upstream_commit"].startswith("99bd997")
    assert "0001-protobuf-one-arg-SetTotalBytesLimit.patch" in info["patch"]

    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.fc = caffe.layers.InnerProduct(n.data, num_output=3, weight_filler=dict(type="xavier"))
    path = tmp_path / "fc.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    net.blobs["data"].data[...] = x
    out = net.forward()["fc"]
    w, b = net.params["fc"][0].data, net.params["fc"][1].data
    np.testing.assert_allclose(out, x.reshape(1, -1) @ w.T + b, rtol=1e-5)


def test_lmdb_round_trip_keeps_the_seeded_order(tmp_path):
    images, labels = blob_images(12, 32, seed=3)
    order = shuffled_order(12, seed=5)
    write_lmdb(tmp_path / "db", ((int(order[i]), images[i], int(labels[i])) for i in range(12)))
    back = list(read_lmdb(tmp_path / "db"))
    assert [k for k, _, _ in back] == sorted(k for k, _, _ in back)
    by_rank = {int(k): (img, lab) for k, img, lab in back}
    for i in range(12):
        img, lab = by_rank[int(order[i])]
        np.testing.assert_array_equal(img, images[i])
        assert lab == labels[i]


def _tiny_training_setup(root: Path) -> Path:
    images, labels = blob_images(200, 32, seed=7)
    order = shuffled_order(200, seed=7)
    write_lmdb(root / "train_lmdb", ((int(order[i]), images[i], int(labels[i]))
                                     for i in range(200)))
    data = DataSpec(str(root / "train_lmdb"), 20, mean_value=(110.0, 110.0, 110.0))
    write_text(root / "train.prototxt", train_net(cifarnet, 2, data, "CifarNet"))
    return root / "train.prototxt"


@pytest.mark.slow
def test_pycaffe_solver_and_caffe_tool_end_at_identical_weights(caffe, tmp_path):
    net_path = _tiny_training_setup(tmp_path)
    common = dict(train_net=net_path, base_lr=0.01, momentum=0.9, weight_decay=0.0005,
                  lr_policy="step", gamma=0.5, stepsize=10, max_iter=30, random_seed=1234,
                  display=0)
    write_text(tmp_path / "py_solver.prototxt",
               solver_param(snapshot_prefix=tmp_path / "py", **common))
    write_text(tmp_path / "tool_solver.prototxt",
               solver_param(snapshot_prefix=tmp_path / "tool", **common))

    solver = caffe.SGDSolver(str(tmp_path / "py_solver.prototxt"))
    initial = {k: v[0].data.copy() for k, v in solver.net.params.items()}
    solver.solve()

    env = dict(os.environ, GLOG_minloglevel="1")
    subprocess.run([str(caffe_env.caffe_binary()), "train",
                    f"--solver={tmp_path / 'tool_solver.prototxt'}"],
                   check=True, env=env, capture_output=True)

    py = caffe.Net(str(net_path), caffe.TRAIN, weights=str(tmp_path / "py_iter_30.caffemodel"))
    tool = caffe.Net(str(net_path), caffe.TRAIN,
                     weights=str(tmp_path / "tool_iter_30.caffemodel"))
    assert list(py.params) == ["conv1", "conv2", "conv3", "ip1"]
    for name in py.params:
        assert not np.array_equal(py.params[name][0].data, initial[name]), f"{name} never moved"
        for i in range(len(py.params[name])):
            np.testing.assert_array_equal(py.params[name][i].data, tool.params[name][i].data,
                                          err_msg=f"{name}[{i}] differs")


def test_a_gpu_asked_of_a_cpu_build_is_refused_not_aborted():
    if caffe_env.build_info().get("cuda") != "0":
        pytest.skip("a CUDA build: asking it for a GPU is legitimate")
    with pytest.raises(caffe_env.NoGpuBuildError, match="CPU-only"):
        caffe_env.set_mode(0)


def test_caffe_random_state_set_back_replays_the_same_draws(caffe, tmp_path):
    """patches/caffe/0003: a state taken from Caffe's RNG, set back later, draws the same."""
    net_file = tmp_path / "noise.prototxt"
    net_file.write_text('layer { name: "noise" type: "DummyData" top: "noise" dummy_data_param '
                        '{ shape { dim: 4 dim: 5 } data_filler { type: "gaussian" } } }')
    net = caffe.Net(str(net_file), caffe.TRAIN)
    rng = caffe._caffe
    state = rng.get_random_state()
    first = net.forward()["noise"].copy()
    second = net.forward()["noise"].copy()
    assert not np.array_equal(first, second)
    rng.set_random_state(state)
    np.testing.assert_array_equal(net.forward()["noise"], first)
    with pytest.raises(ValueError, match="random state"):
        rng.set_random_state("not a state")
