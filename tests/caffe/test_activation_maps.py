"""Activation maps of test images (Shin Fig. 13): the feature-map blob of every model, the
array net's unflattened output, and the figure drawn from a run's own nets and test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spec_helpers import tiny_ln_spec

from medtl.datasets.lmdb_writer import write_lmdb
from medtl.datasets.mean import write_binaryproto
from medtl.experiments.report.activations import activation_figures, feature_maps
from medtl.experiments.report.context import FinishedRun, ReportContext
from medtl.experiments.report.figures import activation_figure
from medtl.experiments.spec import read_experiment
from medtl.infer import ArrayNet
from medtl.nets.registry import FEATURE_MAP_BLOBS, feature_map_blob, get_model, model_names
from medtl.nets.variants import DataSpec, deploy_net, val_net
from medtl.paths import REPO
from medtl.protocols import configurations
from medtl.prototxt import write_text


def _canonical_deploy(model: str) -> Path | None:
    cfg = next((c for c in configurations() if c.model == model), None)
    return None if cfg is None else \
        REPO / "prototxt" / cfg.paper / cfg.study / cfg.id / "deploy.prototxt"


@pytest.mark.parametrize("model", model_names())
def test_every_model_names_its_last_spatial_feature_map(model, caffe, tmp_path):
    blob = feature_map_blob(model)
    assert set(FEATURE_MAP_BLOBS) == set(model_names())
    deploy = _canonical_deploy(model)
    if deploy is None:      # a model no configuration uses: build its deploy net here
        spec = get_model(model)
        deploy = write_text(tmp_path / "deploy.prototxt", deploy_net(
            spec.body, 2, (1, 3, spec.crop_size, spec.crop_size), model))
    net = caffe.Net(str(deploy), caffe.TEST)
    shape = net.blobs[blob].data.shape
    assert len(shape) == 4 and shape[2] > 1 and shape[3] > 1, (blob, shape)
    # the last spatial map: every later blob is 1 x 1 (a global pool) or flat
    later = list(net.blobs)[list(net.blobs).index(blob) + 1:]
    assert later and all(np.prod(net.blobs[b].data.shape[2:]) <= 1 for b in later), later


def _cifarnet_run(tmp_path: Path, caffe) -> tuple[Path, Path, np.ndarray]:
    """A run folder as the runner leaves it, for a CifarNet that has not trained: its
    deploy and TEST nets, weights, test LMDB (labels 0 0 0 1 0 1 1) and mean image."""
    model = get_model("cifarnet")
    run_dir = tmp_path / "run"
    (run_dir / "net").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    labels = [0, 0, 0, 1, 0, 1, 1]
    write_lmdb(tmp_path / "test_lmdb", ((i, im, y) for i, (im, y) in
                                        enumerate(zip(records, labels, strict=True))))
    mean = write_binaryproto(tmp_path / "mean.binaryproto",
                             records.mean(axis=0).astype(np.float32))
    deploy = write_text(run_dir / "net" / "deploy.prototxt",
                        deploy_net(model.body, 2, (1, 3, 32, 32), "CifarNet"))
    write_text(run_dir / "net" / "test.prototxt", val_net(
        model.body, 2, DataSpec(str(tmp_path / "test_lmdb"), 7, mean_file=str(mean)),
        "CifarNet"))
    for name, seed in (("selected.caffemodel", 1), ("init.caffemodel", 2)):
        caffe.set_random_seed(seed)
        caffe.Net(str(deploy), caffe.TEST).save(str(run_dir / name))
    return run_dir, mean, records


def test_the_array_net_gives_a_feature_map_in_its_own_shape(tmp_path, caffe):
    run_dir, mean, records = _cifarnet_run(tmp_path, caffe)
    net = ArrayNet(run_dir / "net" / "deploy.prototxt", run_dir / "selected.caffemodel",
                   mean_file=mean)
    flat = net(records[:3], "pool3")
    maps = net(records[:3], "pool3", flat=False)
    assert flat.shape == (3, 64 * 4 * 4) and maps.shape == (3, 64, 4, 4)
    np.testing.assert_array_equal(maps.reshape(3, -1), flat)


def test_a_run_s_test_images_go_through_its_deploy_net_and_into_the_figure(tmp_path, caffe):
    run_dir, mean, records = _cifarnet_run(tmp_path, caffe)
    run = FinishedRun("cifarnet_ri__fold1", "cifarnet_ri", "CifarNet", 1, 1.0, 1, run_dir,
                      {}, {})
    images, maps, labels, numbers, blob = feature_maps(run, "cifarnet", 4)
    assert blob == "pool3" and labels == [0, 0, 1, 1] and numbers == [0, 1, 3, 5]
    np.testing.assert_array_equal(images, records[numbers])
    assert list(maps) == ["pretrained", "trained"]
    direct = ArrayNet(run_dir / "net" / "deploy.prototxt", run_dir / "selected.caffemodel",
                      mean_file=mean)(records[numbers], "pool3", flat=False)
    np.testing.assert_allclose(maps["trained"], direct, rtol=1e-6)
    assert not np.allclose(maps["pretrained"], maps["trained"])

    experiment = read_experiment(tiny_ln_spec(tmp_path))
    ctx = ReportContext(experiment, [run], [], tmp_path, [], {"cifarnet_ri": "CifarNet"})
    figures, notes = activation_figures(ctx, ["false", "node"], count=4)
    assert figures == [tmp_path / "activations_cifarnet_ri.png"]
    assert figures[0].stat().st_size > 5000
    assert any("Fig. 13" in n for n in notes)

    (run_dir / "net" / "test.prototxt").unlink()
    figures, notes = activation_figures(ctx, ["false", "node"])
    assert figures == [] and "not drawn" in notes[0] and "test.prototxt" in notes[0]


def test_the_activation_figure_draws_each_image_beside_its_maps(tmp_path):
    rng = np.random.default_rng(1)
    maps = {"trained": rng.random((2, 256, 6, 6)), "pretrained": rng.random((2, 256, 6, 6))}
    path = activation_figure(rng.random((2, 3, 227, 227)), maps, tmp_path / "a.png",
                             captions=["NM", "EM"], blob="pool5")
    assert path.stat().st_size > 5000
