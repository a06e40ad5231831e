"""AlexNet-H, AlexNet-L, CaffeNet, OverFeat-fast and VGG-16 on the real Caffe (CPU).

Every net here is built by Caffe from the generated prototxt; shapes and parameter counts
are Caffe's, compared with the papers' tables and the BVLC definitions in Caffe's source.
"""

from __future__ import annotations

import re
import tempfile
from functools import cache
from importlib import import_module

import numpy as np
import pytest

from medtl import caffe_env
from medtl.datasets.lmdb_writer import write_lmdb
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, deploy_net, train_net, val_net
from medtl.prototxt import read_net, write_text

MODELS = ("alexnet-h", "alexnet-l", "caffenet", "overfeat", "vgg16")
MODULES = {"alexnet-h": "alexnet", "alexnet-l": "alexnet", "caffenet": "alexnet",
           "overfeat": "overfeat", "vgg16": "vgg"}

# Weights + biases as Caffe allocates them; the same table is in each module's docstring.
PARAM_COUNTS = {
    ("alexnet-h", 2): 56_876_418,
    ("alexnet-h", 1000): 60_965_224,
    ("alexnet-l", 2): 28_450_818,
    ("alexnet-l", 1000): 32_539_624,
    ("caffenet", 2): 56_876_418,
    ("caffenet", 1000): 60_965_224,
    ("overfeat", 2): 141_832_066,
    ("overfeat", 1000): 145_920_872,
    ("vgg16", 2): 134_268_738,
    ("vgg16", 1000): 138_357_544,
}
BVLC_ALEXNET_PARAMS = 60_965_224   # bvlc_alexnet/deploy.prototxt, counted in the test below

# Tajbakhsh 2016 Table I: layer, kernel, stride, pad, output (C x H x W).
TAJBAKHSH_TABLE_I = (
    ("conv1", 11, 4, 0, (96, 55, 55)),
    ("pool1", 3, 2, 0, (96, 27, 27)),
    ("conv2", 5, 1, 2, (256, 27, 27)),
    ("pool2", 3, 2, 0, (256, 13, 13)),
    ("conv3", 3, 1, 1, (384, 13, 13)),
    ("conv4", 3, 1, 1, (384, 13, 13)),
    ("conv5", 3, 1, 1, (256, 13, 13)),
    ("pool5", 3, 2, 0, (256, 6, 6)),
)
# Table I's fully connected rows: layer, input (C x H x W as the "kernel" covers it), output.
TAJBAKHSH_TABLE_I_FC = (
    ("fc6", (256, 6, 6), 4096),
    ("fc7", (4096,), 4096),
    ("fc8_new", (4096,), "C"),
)

# Sermanet et al. 2014 Table 1 (fast model): layer, output C x H x W at 231x231.
SERMANET_FAST = (
    ("conv1", (96, 56, 56)), ("pool1", (96, 28, 28)),
    ("conv2", (256, 24, 24)), ("pool2", (256, 12, 12)),
    ("conv3", (512, 12, 12)), ("conv4", (1024, 12, 12)), ("conv5", (1024, 12, 12)),
    ("pool5", (1024, 6, 6)), ("fc6", (3072,)), ("fc7", (4096,)),
)

# Layer names in order of the authors' VGG_ILSVRC_16_layers_deploy.prototxt (data and prob
# left out), with fc8 renamed.
VGG16_LAYERS = (
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "pool5",
    "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8_new",
)

BODY_TYPES = {"Convolution": "convolution_param", "Pooling": "pooling_param",
              "LRN": "lrn_param", "InnerProduct": "inner_product_param",
              "Dropout": "dropout_param", "ReLU": "relu_param"}
NUM_CLASSES = 2
COUNT_ROW = re.compile(r"^\| (\S+)\s+\| (\d+)\s+\| (\d{1,3}(?:,\d{3})+) \|$", re.M)


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory):
    """Two tiny LMDBs of random uint8 images: 256x256 (-H models) and 64x64 (AlexNet-L)."""
    root = tmp_path_factory.mktemp("lmdb")
    rng = np.random.default_rng(0)
    paths = {}
    for size in (256, 64):
        records = ((i, rng.integers(0, 256, (3, size, size), dtype=np.uint8), i % 2)
                   for i in range(2))
        paths[size] = root / f"images_{size}"
        write_lmdb(paths[size], records)
    return paths


def _load(proto, path, phase):
    write_text(path, proto)
    c = caffe_env.caffe()
    return c.Net(str(path), {"train": c.TRAIN, "test": c.TEST}[phase])


@cache
def _deploy_shapes(model: str, num_classes: int):
    """(param shapes by layer, blob shapes) of the model's deploy net at batch 1."""
    spec = get_model(model)
    proto = deploy_net(spec.body, num_classes, (1, 3, spec.crop_size, spec.crop_size), model)
    with tempfile.TemporaryDirectory() as tmp:
        net = _load(proto, f"{tmp}/deploy.prototxt", "test")
    params = {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}
    blobs = {name: tuple(b.data.shape) for name, b in net.blobs.items()}
    return params, blobs


def _count(params) -> int:
    return sum(int(np.prod(shape)) for shapes in params.values() for shape in shapes)


def _first_param_layer(net) -> str:
    return next(iter(net.params))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("variant", ["train", "val"])
def test_train_and_val_variants_run_forward_and_backward(caffe, lmdbs, tmp_path, model,
                                                         variant):
    spec = get_model(model)
    batch = 1 if model in ("overfeat", "vgg16") else 2
    data = DataSpec(str(lmdbs[spec.image_size]), batch, crop_size=spec.crop_size,
                    mirror=variant == "train")
    build, phase = (train_net, "train") if variant == "train" else (val_net, "test")
    net = _load(build(spec.body, NUM_CLASSES, data, model), tmp_path / "net.prototxt", phase)

    out = net.forward()
    net.backward()

    assert net.blobs["data"].data.shape == (batch, 3, spec.crop_size, spec.crop_size)
    assert net.blobs["fc8_new"].data.shape == (batch, NUM_CLASSES)
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    first = _first_param_layer(net)
    assert np.abs(net.params[first][0].diff).sum() > 0, "no gradient reached the first layer"
    if variant == "val":
        assert set(out) == {"loss", "accuracy", "prob"}
        np.testing.assert_allclose(out["prob"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_deploy_variant_runs_forward_and_backward(caffe, tmp_path, model):
    spec = get_model(model)
    proto = deploy_net(spec.body, NUM_CLASSES, (1, 3, spec.crop_size, spec.crop_size), model)
    proto.force_backward = True   # no loss in a deploy net: push a gradient in at `prob`
    net = _load(proto, tmp_path / "deploy.prototxt", "test")
    net.blobs["data"].data[...] = np.random.default_rng(1).normal(
        0, 50, net.blobs["data"].data.shape)

    prob = net.forward()["prob"]
    top_diff = np.zeros_like(prob)
    top_diff[:, 0] = 1.0   # d prob_0 (a constant diff would vanish through the softmax)
    grads = net.backward(diffs=["data"], prob=top_diff)

    assert prob.shape == (1, NUM_CLASSES)
    np.testing.assert_allclose(prob.sum(), 1.0, rtol=1e-5)
    assert np.abs(grads["data"]).sum() > 0
    assert np.abs(net.params[_first_param_layer(net)][0].diff).sum() > 0


@pytest.mark.parametrize("num_classes", [2, 3])   # Table I: C = 2, or 3 for intima-media
def test_alexnet_h_matches_tajbakhsh_table_1_row_by_row(caffe, num_classes):
    spec = get_model("alexnet-h")
    params, blobs = _deploy_shapes("alexnet-h", num_classes)
    proto = deploy_net(spec.body, num_classes, (1, 3, 227, 227), "alexnet-h")
    layers = {layer.name: layer for layer in proto.layer}

    assert blobs["data"] == (1, 3, 227, 227)   # row "data": 3x227x227
    for name, kernel, stride, pad, output in TAJBAKHSH_TABLE_I:
        layer = layers[name]
        if layer.type == "Convolution":
            p = layer.convolution_param
            got = (p.kernel_size[0], p.stride[0] if p.stride else 1, p.pad[0] if p.pad else 0)
        else:
            p = layer.pooling_param
            assert p.pool == caffe.params.Pooling.MAX, name
            got = (p.kernel_size, p.stride, p.pad)
        assert got == (kernel, stride, pad), name
        assert blobs[name] == (1, *output), name
    for name, fan_in, output in TAJBAKHSH_TABLE_I_FC:
        expected = num_classes if output == "C" else output
        assert params[name][0] == (expected, int(np.prod(fan_in))), name
        assert blobs[name] == (1, expected), name


@pytest.mark.parametrize(("model", "num_classes"), sorted(PARAM_COUNTS))
def test_parameter_counts_are_exact(caffe, model, num_classes):
    params, _ = _deploy_shapes(model, num_classes)
    assert _count(params) == PARAM_COUNTS[model, num_classes]


def test_parameter_count_tables_in_the_module_docstrings_match():
    documented = {}
    for module in set(MODULES.values()):
        doc = import_module(f"medtl.nets.{module}").__doc__
        for name, classes, count in COUNT_ROW.findall(doc):
            documented[name, int(classes)] = int(count.replace(",", ""))
    assert documented == PARAM_COUNTS


@pytest.mark.parametrize(("model", "zoo"), [("alexnet-h", "bvlc_alexnet"),
                                            ("caffenet", "bvlc_reference_caffenet")])
def test_every_bvlc_deploy_layer_with_parameters_exists_with_the_same_shapes(caffe, model,
                                                                              zoo):
    assert get_model(model).zoo_model == zoo
    bvlc = caffe.Net(str(caffe_env.prefix() / "models" / zoo / "deploy.prototxt"), caffe.TEST)
    bvlc_params = {name: [tuple(b.data.shape) for b in blobs]
                   for name, blobs in bvlc.params.items()}
    del bvlc
    ours, _ = _deploy_shapes(model, 1000)

    assert _count(bvlc_params) == BVLC_ALEXNET_PARAMS == _count(ours)
    assert "fc8" not in ours
    for name, shapes in bvlc_params.items():
        target = "fc8_new" if name == "fc8" else name
        assert ours[target] == shapes, name
    assert list(ours) == [("fc8_new" if n == "fc8" else n) for n in bvlc_params]


def _facts(message) -> dict:
    """Every field of a protobuf message, unset ones at their default."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            out[field.name] = [_facts(v) if field.message_type else v for v in value]
        else:
            out[field.name] = _facts(value) if field.message_type else value
    return out


def _layer_facts(layer, rename: dict[str, str]) -> dict:
    facts = dict(name=rename.get(layer.name, layer.name), type=layer.type,
                 bottom=[rename.get(b, b) for b in layer.bottom],
                 top=[rename.get(t, t) for t in layer.top],
                 param=[(p.lr_mult, p.decay_mult) for p in layer.param],
                 hyper=_facts(getattr(layer, BODY_TYPES[layer.type])))
    if layer.type == "Convolution":   # repeated fields: [] means Caffe's default
        facts["hyper"]["pad"] = facts["hyper"]["pad"] or [0]
        facts["hyper"]["stride"] = facts["hyper"]["stride"] or [1]
    return facts


@pytest.mark.parametrize(("model", "zoo"), [("alexnet-h", "bvlc_alexnet"),
                                            ("caffenet", "bvlc_reference_caffenet")])
def test_layers_equal_bvlc_train_val_in_name_order_hyperparameters_and_fillers(model, zoo):
    """Everything but the data layers and losses, with fc8 renamed fc8_new."""
    bvlc = read_net(caffe_env.prefix() / "models" / zoo / "train_val.prototxt")
    spec = get_model(model)
    data = DataSpec("unused_lmdb", 1, crop_size=spec.crop_size)
    ours = train_net(spec.body, 1000, data, model)
    rename = {"fc8": "fc8_new"}

    expected = [_layer_facts(layer, rename) for layer in bvlc.layer
                if layer.type in BODY_TYPES]
    got = [_layer_facts(layer, {}) for layer in ours.layer if layer.type in BODY_TYPES]
    assert [f["name"] for f in got] == [f["name"] for f in expected]
    for ours_layer, bvlc_layer in zip(got, expected, strict=True):
        assert ours_layer == bvlc_layer, bvlc_layer["name"]
    assert [layer.type for layer in bvlc.layer if layer.type not in BODY_TYPES] == \
        ["Data", "Data", "Accuracy", "SoftmaxWithLoss"]


def test_alexnet_and_caffenet_differ_in_norm_pool_order():
    def order(model):
        spec = get_model(model)
        proto = deploy_net(spec.body, 2, (1, 3, 227, 227), model)
        return [layer.name for layer in proto.layer if layer.type in ("LRN", "Pooling")]

    assert order("alexnet-h") == ["norm1", "pool1", "norm2", "pool2", "pool5"]
    assert order("caffenet") == ["pool1", "norm1", "pool2", "norm2", "pool5"]


def test_alexnet_l_changes_only_conv1_filters_and_stride(caffe):
    spec = get_model("alexnet-l")
    assert (spec.crop_size, spec.image_size, spec.zoo_model) == (64, 64, None)
    low = deploy_net(spec.body, 2, (1, 3, 64, 64), "alexnet-l")
    high = deploy_net(get_model("alexnet-h").body, 2, (1, 3, 64, 64), "alexnet-h")
    for a, b in zip(low.layer, high.layer, strict=True):
        if a.name == "conv1":
            assert (a.convolution_param.num_output, a.convolution_param.stride[:]) == (64, [2])
            assert (b.convolution_param.num_output, b.convolution_param.stride[:]) == (96, [4])
            a.convolution_param.num_output = 96
            del a.convolution_param.stride[:]
            a.convolution_param.stride.append(4)
        assert a == b, a.name
    params, blobs = _deploy_shapes("alexnet-l", 2)
    assert params["conv1"][0] == (64, 3, 11, 11)
    assert blobs["conv1"] == (1, 64, 27, 27)
    assert blobs["pool5"] == (1, 256, 3, 3)
    assert params["fc6"][0] == (4096, 256 * 3 * 3)


def test_overfeat_fast_matches_sermanet_table_1(caffe):
    spec = get_model("overfeat")
    assert (spec.crop_size, spec.image_size, spec.zoo_model) == (231, 256, None)
    assert any("no public Caffe weights" in note for note in spec.notes)
    params, blobs = _deploy_shapes("overfeat", 2)
    for name, output in SERMANET_FAST:
        assert blobs[name] == (1, *output), name
    assert params["conv4"][0] == (1024, 512, 3, 3)
    assert params["conv5"][0] == (1024, 1024, 3, 3)
    proto = deploy_net(spec.body, 2, (1, 3, 231, 231), "overfeat")
    pools = {layer.name: layer.pooling_param for layer in proto.layer if layer.type == "Pooling"}
    assert {name: (p.kernel_size, p.stride) for name, p in pools.items()} == \
        {"pool1": (2, 2), "pool2": (2, 2), "pool5": (2, 2)}
    assert not [layer for layer in proto.layer if layer.type == "LRN"]


def test_vgg16_follows_vgg_ilsvrc_16_layers(caffe):
    spec = get_model("vgg16")
    assert (spec.crop_size, spec.image_size, spec.zoo_model) == (224, 256, "VGG_ILSVRC_16_layers")
    proto = deploy_net(spec.body, 2, (1, 3, 224, 224), "vgg16")
    assert tuple(layer.name for layer in proto.layer)[1:-1] == VGG16_LAYERS
    params, blobs = _deploy_shapes("vgg16", 2)
    assert blobs["pool5"] == (1, 512, 7, 7)
    assert params["fc6"][0] == (4096, 512 * 7 * 7)
    convs = [layer.convolution_param for layer in proto.layer if layer.type == "Convolution"]
    assert len(convs) == 13
    assert {(c.kernel_size[0], c.pad[0], c.stride[0]) for c in convs} == {(3, 1, 1)}
    fillers = {c.weight_filler.type for c in convs}
    assert fillers == {"xavier"}
    assert {c.weight_filler.variance_norm for c in convs} == \
        {caffe_env.caffe_pb2().FillerParameter.AVERAGE}


@pytest.mark.parametrize("model", MODELS)
def test_layer_groups_cover_every_parameter_layer_in_forward_order(caffe, model):
    spec = get_model(model)
    params, _ = _deploy_shapes(model, NUM_CLASSES)
    names = [name for _, layers in spec.layer_groups for name in layers]
    assert names == list(params)
    assert [group for group, _ in spec.layer_groups] == \
        ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert spec.layer_groups[-1] == ("fc8", ("fc8_new",))
    assert spec.classifiers == ("fc8_new",)
    assert spec.name == model and spec.source and spec.notes
    if model == "vgg16":
        assert spec.layer_groups[0] == ("conv1", ("conv1_1", "conv1_2"))
        assert spec.layer_groups[4] == ("conv5", ("conv5_1", "conv5_2", "conv5_3"))
