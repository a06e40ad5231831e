"""GoogLeNet-H/-L and DenseNet-121: faithful to their reference definitions, and they run.

Parameter counts asserted below (weights + biases; DenseNet "all" also counts BatchNorm's
statistics, "learnable" leaves them out):

| model            | classes | variant | parameters |
|------------------|---------|---------|------------|
| googlenet-h      | 2       | deploy  | 5,975,602  |
| googlenet-h      | 2       | train   | 10,309,430 |
| googlenet-h      | 1000    | deploy  | 6,998,552  |
| googlenet-h      | 1000    | train   | 13,378,280 |
| googlenet-l      | 2       | deploy  | 5,966,514  |
| googlenet-l      | 2       | train   | 12,659,638 |
| densenet121      | 2       | all     | 7,039,675  |
| densenet121      | 2       | learn.  | 6,955,906  |
| densenet121      | 1000    | all     | 8,062,625  |
| densenet121      | 1000    | learn.  | 7,978,856  |
| densenet121-boit | 1       | all     | 7,300,282  |
| densenet121-boit | 1       | learn.  | 7,216,513  |
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from medtl.caffe_env import caffe_pb2, prefix
from medtl.datasets.lmdb_writer import write_lmdb
from medtl.nets import densenet, googlenet
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, deploy_net, train_net
from medtl.prototxt import read_net, write_text

BVLC = prefix() / "models" / "bvlc_googlenet"
BVLC_MEAN = (104.0, 117.0, 123.0)   # bvlc_googlenet train_val transform_param mean_value
NOT_BODY = ("Data", "Input", "HDF5Data", "SoftmaxWithLoss", "SigmoidCrossEntropyLoss",
            "Accuracy", "Softmax", "Sigmoid")


def _net(caffe, proto, path: Path, phase: str):
    write_text(path, proto)
    return caffe.Net(str(path), {"train": caffe.TRAIN, "test": caffe.TEST}[phase])


def _count(net, skip_types: dict[str, str] | None = None) -> int:
    skip = skip_types or {}
    return sum(b.data.size for name, blobs in net.params.items()
               if skip.get(name) != "BatchNorm" for b in blobs)


def _types(proto) -> dict[str, str]:
    return {layer.name: layer.type for layer in proto.layer}


def _images_lmdb(path: Path, size: int, count: int = 2) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 3, size, size), dtype=np.uint8)
    write_lmdb(path, ((i, images[i], i % 2) for i in range(count)))
    return path


def _forward_backward(net) -> float:
    out = net.forward()
    net.backward()
    loss = sum(float(np.sum(v)) for v in out.values())
    assert np.isfinite(loss)
    return loss


def _unit_statistics(net, proto) -> None:
    """Give every BatchNorm mean 0, variance 1, factor 1, as trained weights would."""
    for name, kind in _types(proto).items():
        if kind == "BatchNorm":
            mean, var, factor = net.params[name]
            mean.data[...], var.data[...], factor.data[...] = 0, 1, 1


def _deploy_forward_backward(net, classifier: str) -> None:
    """Forward a random image, then push a random gradient into the classifier's output
    (softmax of an untrained net may saturate) and check it reaches `data`."""
    rng = np.random.default_rng(1)
    net.blobs["data"].data[...] = rng.normal(0, 50, net.blobs["data"].data.shape)
    prob = net.forward()["prob"]
    assert np.all(np.isfinite(prob))
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-4)
    top = net.blobs[classifier]
    top.diff[...] = rng.normal(0, 1, top.diff.shape)
    net.backward(start=classifier)
    assert np.all(np.isfinite(net.blobs["data"].diff))
    assert np.any(net.blobs["data"].diff != 0)


def _with_force_backward(proto):
    proto.force_backward = True
    return proto


# --- GoogLeNet-H against BVLC GoogLeNet -------------------------------------------------

@pytest.fixture(scope="module")
def bvlc_train_val():
    return read_net(BVLC / "train_val.prototxt")


@pytest.fixture(scope="module")
def gh_train(tmp_path_factory):
    root = tmp_path_factory.mktemp("googlenet_h")
    db = _images_lmdb(root / "train_lmdb", googlenet.GOOGLENET_H.image_size)
    data = DataSpec(str(db), 1, crop_size=googlenet.GOOGLENET_H.crop_size, mirror=True,
                    mean_value=BVLC_MEAN)
    return root, train_net(googlenet.googlenet_h, 2, data, "GoogLeNet-H")


def _as_bvlc(layer):
    """Our layer under BVLC's names: *_new classifiers back to BVLC's 1000 outputs."""
    out = caffe_pb2().LayerParameter()
    out.CopyFrom(layer)
    out.name = out.name.removesuffix("_new")
    for field in (out.bottom, out.top):
        field[:] = [t.removesuffix("_new") for t in field]
    if layer.name in googlenet.CLASSIFIERS:
        out.inner_product_param.num_output = 1000
    return out


def test_googlenet_h_is_bvlc_train_val_layer_for_layer(bvlc_train_val, gh_train):
    _, ours = gh_train
    theirs = [layer for layer in bvlc_train_val.layer if layer.type not in NOT_BODY]
    mine = [_as_bvlc(layer) for layer in ours.layer if layer.type not in NOT_BODY]
    assert [layer.name for layer in mine] == [layer.name for layer in theirs]
    for a, b in zip(mine, theirs, strict=True):
        assert a == b, f"layer {b.name} differs from bvlc_googlenet:\n{a}\nvs\n{b}"
    bvlc_crop = {layer.transform_param.crop_size for layer in bvlc_train_val.layer
                 if layer.type == "Data"}
    assert bvlc_crop == {googlenet.GOOGLENET_H.crop_size} == {224}
    assert googlenet.GOOGLENET_H.image_size == 256


def test_googlenet_h_auxiliary_losses_weigh_0_3_and_only_in_train(gh_train, tmp_path):
    _, ours = gh_train
    text = str(ours)
    assert text.count("loss_weight: 0.3") == 2
    losses = {layer.name: (list(layer.bottom), list(layer.top), list(layer.loss_weight))
              for layer in ours.layer if layer.type == "SoftmaxWithLoss"}
    # Caffe 1.0's bvlc_googlenet: layers loss1/loss, loss2/loss, loss3/loss3 (the kit named
    # the auxiliary layers after their tops, loss1/loss1 and loss2/loss2, before issue 10)
    assert losses == {
        "loss1/loss": (["loss1/classifier_new", "label"], ["loss1/loss1"], [pytest.approx(0.3)]),
        "loss2/loss": (["loss2/classifier_new", "label"], ["loss2/loss2"], [pytest.approx(0.3)]),
        "loss3/loss3": (["loss3/classifier_new", "label"], ["loss3/loss3"], []),
    }
    deploy = deploy_net(googlenet.googlenet_h, 2, (1, 3, 224, 224), "GoogLeNet-H")
    assert not [layer.name for layer in deploy.layer if layer.name.startswith(("loss1", "loss2"))]


def test_googlenet_loss_layers_and_tops_are_named_as_bvlc(bvlc_train_val, gh_train):
    _, ours = gh_train
    theirs = [(layer.name, list(layer.top)) for layer in bvlc_train_val.layer
              if layer.type == "SoftmaxWithLoss"]
    mine = [(layer.name, list(layer.top)) for layer in ours.layer
            if layer.type == "SoftmaxWithLoss"]
    assert sorted(mine) == sorted(theirs) == [("loss1/loss", ["loss1/loss1"]),
                                              ("loss2/loss", ["loss2/loss2"]),
                                              ("loss3/loss3", ["loss3/loss3"])]


def test_googlenet_h_has_every_bvlc_deploy_parameter_with_its_shape(caffe, tmp_path):
    bvlc = caffe.Net(str(BVLC / "deploy.prototxt"), caffe.TEST)
    proto = deploy_net(googlenet.googlenet_h, 2, (1, 3, 224, 224), "GoogLeNet-H")
    ours = _net(caffe, proto, tmp_path / "deploy.prototxt", "test")
    renamed = {c.removesuffix("_new"): c for c in googlenet.CLASSIFIERS}
    for name, blobs in bvlc.params.items():
        mine = ours.params[renamed.get(name, name)]
        for theirs, b in zip(blobs, mine, strict=True):
            expected = theirs.data.shape
            if name in renamed:
                expected = (2, *expected[1:])
            assert b.data.shape == expected, name
    assert set(ours.params) == {renamed.get(n, n) for n in bvlc.params}
    assert _count(ours) == 5_975_602
    assert _count(bvlc) == 6_998_552


def test_googlenet_parameter_counts(caffe, tmp_path, bvlc_train_val):
    def count(body, k, size, train):
        n = caffe.NetSpec()
        n.data, n.label = caffe.layers.Input(shape=[dict(dim=[1, 3, size, size]),
                                                    dict(dim=[1])], ntop=2)
        heads = body(n, n.data, k, deploy=not train)
        for head in heads:
            n[head.loss_name] = caffe.layers.SoftmaxWithLoss(head.top, n.label)
        return _count(_net(caffe, n.to_proto(), tmp_path / "n.prototxt",
                           "train" if train else "test"))

    assert count(googlenet.googlenet_h, 1000, 224, False) == 6_998_552
    assert count(googlenet.googlenet_h, 1000, 224, True) == 13_378_280
    assert count(googlenet.googlenet_h, 2, 224, True) == 10_309_430
    assert count(googlenet.googlenet_l, 2, 64, False) == 5_966_514
    assert count(googlenet.googlenet_l, 2, 64, True) == 12_659_638

    # BVLC's own train_val (data layers replaced by an Input) has the same 13,378,280.
    proto = caffe_pb2().NetParameter()
    proto.CopyFrom(bvlc_train_val)
    body = [layer for layer in proto.layer if layer.type != "Data"]
    del proto.layer[:]
    proto.layer.add(name="data", type="Input", top=["data", "label"]).input_param.shape.add(
        dim=[1, 3, 224, 224])
    proto.layer[0].input_param.shape.add(dim=[1])
    proto.layer.extend(body)
    assert _count(_net(caffe, proto, tmp_path / "bvlc.prototxt", "train")) == 13_378_280


def test_googlenet_h_train_and_deploy_run_forward_and_backward(caffe, gh_train, tmp_path):
    root, proto = gh_train
    net = _net(caffe, proto, root / "train.prototxt", "train")
    assert net.blobs["data"].data.shape == (1, 3, 224, 224)
    _forward_backward(net)
    for layer in ("conv1/7x7_s2", "inception_4a/1x1", *googlenet.CLASSIFIERS):
        assert np.any(net.params[layer][0].diff != 0), f"{layer} got no gradient"

    deploy = _with_force_backward(
        deploy_net(googlenet.googlenet_h, 2, (1, 3, 224, 224), "GoogLeNet-H"))
    _deploy_forward_backward(_net(caffe, deploy, tmp_path / "deploy.prototxt", "test"),
                             googlenet.MAIN_CLASSIFIER)


# --- GoogLeNet-L ----------------------------------------------------------------------------

def test_googlenet_l_changes_only_the_stem_and_runs_at_64(caffe, tmp_path):
    spec = get_model("googlenet-l")
    assert (spec.crop_size, spec.image_size) == (64, 64)
    db = _images_lmdb(tmp_path / "train_lmdb", 64)
    proto = train_net(spec.body, 2, DataSpec(str(db), 1), "GoogLeNet-L")
    layers = {layer.name: layer for layer in proto.layer}
    conv1 = layers["conv1/5x5_s1"].convolution_param
    assert (conv1.num_output, list(conv1.kernel_size), list(conv1.pad)) == (32, [5], [2])
    assert list(conv1.stride) in ([], [1])   # stride 1 is Caffe's default
    assert layers["pool1/3x3_s1"].pooling_param.stride == 1
    assert "conv1/7x7_s2" not in layers and "pool1/3x3_s2" not in layers

    h = train_net(googlenet.googlenet_h, 2, DataSpec(str(db), 1), "GoogLeNet-H")
    h_layers = [_strip(layer) for layer in h.layer if layer.name not in STEM_H_NAMES]
    l_layers = [_strip(layer) for layer in proto.layer if layer.name not in STEM_L_NAMES]
    assert h_layers == l_layers   # everything but the stem is GoogLeNet's

    net = _net(caffe, proto, tmp_path / "train.prototxt", "train")
    shapes = {b: net.blobs[b].data.shape[1:] for b in (
        "conv1/5x5_s1", "pool1/3x3_s1", "pool2/3x3_s2", "pool3/3x3_s2", "loss1/ave_pool",
        "loss2/ave_pool", "pool4/3x3_s2", "pool5/7x7_s1")}
    assert shapes == {"conv1/5x5_s1": (32, 64, 64), "pool1/3x3_s1": (32, 62, 62),
                      "pool2/3x3_s2": (192, 31, 31), "pool3/3x3_s2": (480, 15, 15),
                      "loss1/ave_pool": (512, 5, 5), "loss2/ave_pool": (528, 5, 5),
                      "pool4/3x3_s2": (832, 7, 7), "pool5/7x7_s1": (1024, 1, 1)}
    assert net.params["loss1/fc"][0].data.shape == (1024, 3200)
    assert net.params["conv2/3x3_reduce"][0].data.shape == (64, 32, 1, 1)
    _forward_backward(net)
    assert np.any(net.params["conv1/5x5_s1"][0].diff != 0)

    deploy = _with_force_backward(deploy_net(spec.body, 2, (1, 3, 64, 64), "GoogLeNet-L"))
    _deploy_forward_backward(_net(caffe, deploy, tmp_path / "deploy.prototxt", "test"),
                             googlenet.MAIN_CLASSIFIER)


STEM_H_NAMES = ("conv1/7x7_s2", "conv1/relu_7x7", "pool1/3x3_s2")
STEM_L_NAMES = ("conv1/5x5_s1", "conv1/relu_5x5", "pool1/3x3_s1")


def _strip(layer):
    """A layer with the stem's names replaced, so H and L compare outside the stem."""
    out = caffe_pb2().LayerParameter()
    out.CopyFrom(layer)
    for h, low in zip(STEM_H_NAMES, STEM_L_NAMES, strict=True):
        out.bottom[:] = ["STEM" if b in (h, low) else b for b in out.bottom]
    return out


@pytest.mark.parametrize("spec", [googlenet.GOOGLENET_H, googlenet.GOOGLENET_L])
def test_googlenet_layer_groups_cover_every_parameterised_layer_once(spec, tmp_path):
    db = str(tmp_path / "unused_lmdb")
    proto = train_net(spec.body, 2, DataSpec(db, 1), spec.name)
    parameterised = [layer.name for layer in proto.layer
                     if layer.type in ("Convolution", "InnerProduct")]
    grouped = [name for _, names in spec.layer_groups for name in names]
    assert sorted(grouped) == sorted(parameterised)
    trunk = [name for group, names in spec.layer_groups
             if group not in ("loss1", "loss2") for name in names]
    assert trunk == [n for n in parameterised if not n.startswith(("loss1/", "loss2/"))]
    assert set(spec.classifiers) <= set(grouped)
    assert [g for g, _ in spec.layer_groups][:3] == ["conv1", "conv2", "inception_3a"]


# --- DenseNet-121 ---------------------------------------------------------------------------

KERAS_BLOCKS = {2: 6, 3: 12, 4: 24, 5: 16}


def _keras_conv_and_bn_names() -> tuple[list[str], list[str]]:
    """keras.applications.DenseNet121's conv and BN layer names, from their naming pattern."""
    convs, bns = ["conv1/conv"], ["conv1/bn"]
    for stage, blocks in KERAS_BLOCKS.items():
        for i in range(1, blocks + 1):
            convs += [f"conv{stage}_block{i}_1_conv", f"conv{stage}_block{i}_2_conv"]
            bns += [f"conv{stage}_block{i}_0_bn", f"conv{stage}_block{i}_1_bn"]
        if stage < 5:
            convs.append(f"pool{stage}_conv")
            bns.append(f"pool{stage}_bn")
    bns.append("bn")
    return convs, bns


@pytest.fixture(scope="module")
def dn_deploy():
    return deploy_net(densenet.densenet121, 2, (1, 3, 224, 224), "DenseNet-121")


def test_keras_map_covers_every_conv_and_bn_of_densenet121(dn_deploy):
    convs, bns = _keras_conv_and_bn_names()
    assert (len(convs), len(bns)) == (120, 121)
    types = _types(dn_deploy)
    mapped = []
    for name in convs:
        caffe_layers = densenet.keras_to_caffe(name)
        assert [types[c] for c in caffe_layers] == ["Convolution"], name
        mapped += caffe_layers
    for name in bns:
        caffe_layers = densenet.keras_to_caffe(name)
        assert [types[c] for c in caffe_layers] == ["BatchNorm", "Scale"], name
        assert caffe_layers[0].endswith("/bn") and caffe_layers[1].endswith("/scale")
        mapped += caffe_layers
    parameterised = [n for n, t in types.items() if t in ("Convolution", "BatchNorm", "Scale")]
    assert sorted(mapped) == sorted(parameterised)   # one to one, nothing left over
    assert densenet.keras_to_caffe("conv2_block1_concat") == ["concat_2_1"]
    assert densenet.keras_to_caffe("pool3_pool") == ["pool3"]
    assert densenet.keras_to_caffe("relu") == ["relu5_blk"]
    assert densenet.keras_to_caffe("avg_pool") == ["pool5"]


@pytest.mark.parametrize("name, hint", [("fc1000", "fc6_new"), ("conv6_block1_1_conv", ""),
                                        ("conv2_block7_1_conv", ""), ("zero_padding2d_1", "pad"),
                                        ("", "")])
def test_keras_map_rejects_unknown_names_clearly(name, hint):
    with pytest.raises(densenet.UnknownKerasLayerError) as err:
        densenet.keras_to_caffe(name)
    message = str(err.value)
    assert repr(name) in message and "DenseNet121" in message and hint in message
    with pytest.raises(densenet.UnknownKerasLayerError):
        densenet.caffe_layers_from(name)


def test_boit_fine_tuning_boundary(caffe, dn_deploy, tmp_path):
    assert densenet.BOIT_UNFREEZE_FROM == "conv5_block16_2_conv"
    assert densenet.BOIT_FIRST_LEARNING == "conv5_16/x2"
    assert densenet.caffe_layers_from("conv5_block16_2_conv") == ["conv5_16/x2",
                                                                  "conv5_blk/scale"]
    assert densenet.caffe_layers_from("conv5_block16_concat") == ["conv5_blk/scale"]
    everything = densenet.caffe_layers_from("conv1/conv")
    types = _types(dn_deploy)
    learnable = [layer.name for layer in dn_deploy.layer if layer.type in ("Convolution", "Scale")]
    assert everything == learnable   # forward order, no BatchNorm
    assert all(types[n] != "BatchNorm" for n in everything)
    net = _net(caffe, dn_deploy, tmp_path / "deploy.prototxt", "test")
    assert net.params["conv5_16/x2"][0].data.shape == (32, 128, 3, 3)   # Keras (3,3,128,32)
    assert net.params["conv1"][0].data.shape == (64, 3, 7, 7)
    assert net.params["conv4_blk"][0].data.shape == (512, 1024, 1, 1)   # pool4_conv


@pytest.mark.parametrize("spec", [densenet.DENSENET121, densenet.DENSENET121_BOIT])
def test_densenet_batchnorm_statistics_are_never_learned(spec, tmp_path):
    train = train_net(spec.body, 1, DataSpec(str(tmp_path / "x.txt"), 1, backend="hdf5"),
                      spec.name, loss="sigmoid")
    deploy = deploy_net(spec.body, 1, (1, 3, 224, 224), spec.name)
    for proto in (train, deploy):
        bns = [layer for layer in proto.layer if layer.type == "BatchNorm"]
        assert len(bns) == 121
        for layer in bns:
            assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(0, 0)] * 3, layer.name
            assert layer.batch_norm_param.eps == pytest.approx(1e-5)
            assert not layer.batch_norm_param.HasField("use_global_stats")
        scales = [layer for layer in proto.layer if layer.type == "Scale"]
        assert len(scales) == 121 and all(s.scale_param.bias_term for s in scales)
        convs = [layer for layer in proto.layer if layer.type == "Convolution"]
        assert len(convs) == 120
        assert all(not c.convolution_param.bias_term and len(c.param) == 1 for c in convs)
        assert {c.convolution_param.weight_filler.variance_norm for c in convs} == {
            caffe_pb2().FillerParameter.FAN_OUT}
        assert not [layer for layer in proto.layer if layer.type == "Dropout"]


def test_densenet_layer_groups_follow_forward_order(dn_deploy):
    spec = get_model("densenet121")
    names = [g for g, _ in spec.layer_groups]
    assert names == ["conv1", "denseblock1", "transition1", "denseblock2", "transition2",
                     "denseblock3", "transition3", "denseblock4", "final_bn", "classifier"]
    parameterised = [layer.name for layer in dn_deploy.layer
                     if layer.type in ("Convolution", "BatchNorm", "Scale", "InnerProduct")]
    assert [n for _, group in spec.layer_groups for n in group] == parameterised
    groups = dict(spec.layer_groups)
    assert len(groups["denseblock3"]) == 24 * 6 and groups["transition3"][-1] == "conv4_blk"
    assert groups["classifier"] == spec.classifiers == ("fc6_new",)
    assert densenet.DENSENET121_BOIT.classifiers == ("fc_hidden_new", "fc6_new")


def test_densenet_parameter_counts(caffe, tmp_path):
    def counts(body, k):
        proto = deploy_net(body, k, (1, 3, 224, 224), "DenseNet-121")
        net = _net(caffe, proto, tmp_path / "d.prototxt", "test")
        return _count(net), _count(net, _types(proto))

    assert counts(densenet.densenet121, 2) == (7_039_675, 6_955_906)
    # keras.applications.DenseNet121: 8,062,504 parameters, 7,978,856 trainable; Caffe adds
    # one moving-average factor per BatchNorm (121).
    assert counts(densenet.densenet121, 1000) == (8_062_504 + 121, 7_978_856)
    assert counts(densenet.densenet121_boit_head, 1) == (7_300_282, 7_216_513)


def test_densenet_deploy_runs_forward_and_backward(caffe, dn_deploy, tmp_path):
    proto = _with_force_backward(dn_deploy)
    net = _net(caffe, proto, tmp_path / "deploy.prototxt", "test")
    shapes = {b: net.blobs[b].data.shape[1:] for b in ("pool1", "pool2", "pool3", "pool4",
                                                       "pool5", "fc6_new")}
    assert shapes == {"pool1": (64, 56, 56), "pool2": (128, 28, 28), "pool3": (256, 14, 14),
                      "pool4": (512, 7, 7), "pool5": (1024, 1, 1), "fc6_new": (2,)}
    _unit_statistics(net, proto)
    _deploy_forward_backward(net, densenet.CLASSIFIER)


def test_densenet_boit_train_runs_forward_and_backward_with_bce(caffe, tmp_path):
    rng = np.random.default_rng(2)
    with h5py.File(tmp_path / "train.h5", "w") as f:
        f["data"] = rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
        f["label"] = np.ones((1, 1), np.float32)
    (tmp_path / "train.txt").write_text(f"{tmp_path / 'train.h5'}\n")
    spec = densenet.DENSENET121_BOIT
    proto = train_net(spec.body, 1, DataSpec(str(tmp_path / "train.txt"), 1, backend="hdf5"),
                      "DenseNet-121-Boit", loss="sigmoid")
    layers = {layer.name: layer for layer in proto.layer}
    assert layers["loss"].type == "SigmoidCrossEntropyLoss"
    assert list(layers["fc6_new"].bottom) == ["fc_hidden_new"]
    assert layers["fc_hidden_new"].inner_product_param.num_output == densenet.BOIT_HIDDEN
    assert layers["relu_hidden_new"].type == "ReLU"
    net = _net(caffe, proto, tmp_path / "train.prototxt", "train")
    assert net.blobs["fc6_new"].data.shape == (1, 1)
    _forward_backward(net)
    for layer in ("conv1", "conv5_16/x2", "conv5_blk/scale", "fc_hidden_new", "fc6_new"):
        assert np.any(net.params[layer][0].diff != 0), f"{layer} got no gradient"
    # TRAIN phase: BatchNorm uses batch statistics and accumulates them (factor 0 -> 1).
    assert net.params["conv1/bn"][2].data[0] == pytest.approx(1.0)
