"""Weight surgery (medtl.surgery) and the model-zoo weights helper (medtl.zoo), on real Caffe."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from medtl import zoo
from medtl.caffe_env import caffe_pb2
from medtl.errors import OutputExistsError
from medtl.nets.body import Head
from medtl.nets.cifarnet import cifarnet
from medtl.nets.layers import conv, fc, gaussian, learned_param, max_pool
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, deploy_net, val_net
from medtl.prototxt import read_net, write_text
from medtl.surgery import (
    SurgeryError,
    TransplantError,
    random_weights,
    read_weights,
    transplant,
)

# --- small nets: CifarNet and edited copies ---------------------------------------------------


def _small_body(*, conv3_filters: int = 64, classifier: str = "ip1", conv_classifier=False):
    """A CifarNet-like body whose conv3 width, classifier name and kind can change."""

    def body(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
        p = learned_param()
        n.conv1 = conv(bottom, 32, 5, pad=2, param=p, weight_filler=gaussian(0.01))
        n.pool1 = max_pool(n.conv1, 3, 2)
        n.conv2 = conv(n.pool1, 32, 5, pad=2, param=p, weight_filler=gaussian(0.01))
        n.pool2 = max_pool(n.conv2, 3, 2)
        n.conv3 = conv(n.pool2, conv3_filters, 5, pad=2, param=p, weight_filler=gaussian(0.01))
        n.pool3 = max_pool(n.conv3, 3, 2)
        if conv_classifier:   # fc -> conv over the whole 4 x 4 map: same element count
            n[classifier] = conv(n.pool3, num_classes, 4, param=p, weight_filler=gaussian(0.01))
        else:
            n[classifier] = fc(n.pool3, num_classes, param=p, weight_filler=gaussian(0.01))
        return [Head(n[classifier], "loss")]

    return body


def _deploy(path: Path, body, num_classes: int = 2, size: int = 32) -> Path:
    return write_text(path, deploy_net(body, num_classes, (1, 3, size, size), "Net"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small 'pretrained' net: definition + caffemodel with random weights."""
    root = tmp_path_factory.mktemp("small")
    definition = _deploy(root / "source.prototxt", _small_body())
    weights = random_weights(definition, root / "source.caffemodel", seed=11)
    return definition, weights


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def _assert_copied_exactly(source: dict, dest: dict, names) -> None:
    for name in names:
        assert len(source[name]) == len(dest[name])
        for a, b in zip(source[name], dest[name], strict=True):
            np.testing.assert_array_equal(_bits(a).ravel(), _bits(b).ravel(), err_msg=name)


def test_identical_net_copies_every_layer_bit_identically(small, tmp_path):
    definition, weights = small
    dest = tmp_path / "out.caffemodel"
    report = transplant(definition, weights, definition, dest)
    assert [t.name for t in report.copied] == ["conv1", "conv2", "conv3", "ip1"]
    assert not (report.reshaped or report.fresh or report.mismatched or report.skipped)
    source, out = read_weights(weights), read_weights(dest)
    _assert_copied_exactly(source, out, source)
    assert report.dest_weights == str(dest)
    assert not list(tmp_path.glob(".*tmp*"))   # the temporary file was renamed away


def test_fresh_layers_keep_the_seeded_target_initialisation(small, tmp_path):
    definition, weights = small
    runs = {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        dest = tmp_path / f"{tag}.caffemodel"
        report = transplant(definition, weights, definition, dest, fresh=["ip1"], seed=seed)
        assert [t.name for t in report.fresh] == ["ip1"]
        runs[tag] = read_weights(dest)["ip1"][0]
    source_ip1 = read_weights(weights)["ip1"][0]
    np.testing.assert_array_equal(runs["a"], runs["b"])          # same seed, same init
    assert not np.array_equal(runs["a"], runs["c"])              # another seed, another init
    assert not np.array_equal(runs["a"], source_ip1)             # not copied
    assert 0.001 < runs["a"].std() < 0.1                         # the gaussian(0.01) filler


def test_partial_transfer_is_refused_naming_each_layer(small, tmp_path):
    definition, weights = small
    # conv3 narrower (element count differs), classifier renamed (source ip1 has no home).
    target = _deploy(tmp_path / "target.prototxt",
                     _small_body(conv3_filters=48, classifier="ip1_new"))
    dest = tmp_path / "out.caffemodel"
    with pytest.raises(TransplantError) as refused:
        transplant(definition, weights, target, dest)
    message = str(refused.value)
    assert "conv3" in message and "64x32x5x5" in message and "48x32x5x5" in message
    assert "ip1" in message
    assert not dest.exists() and not list(tmp_path.glob(".out*"))
    # Dropping the old classifier does not excuse the mismatched conv3.
    with pytest.raises(TransplantError, match="conv3") as still:
        transplant(definition, weights, target, dest, drop=["ip1"])
    assert "lacks" not in str(still.value)

    report = transplant(definition, weights, target, dest, allow_partial=True)
    assert [t.name for t in report.copied] == ["conv1", "conv2"]
    assert [(t.name, t.source_shapes, t.target_shapes) for t in report.mismatched] == [
        ("conv3", ((64, 32, 5, 5), (64,)), ((48, 32, 5, 5), (48,)))]
    assert [(t.name, t.note) for t in report.fresh] == [("ip1_new", "not in the source weights")]
    assert [(t.name, t.target_shapes) for t in report.skipped] == [("ip1", None)]
    assert {t.name for t in report.problems} == {"conv3", "ip1"}
    _assert_copied_exactly(read_weights(weights), read_weights(dest), ["conv1", "conv2"])
    text = report.summary()
    assert "mismatched  conv3" in text and "skipped     ip1" in text
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["mismatched"][0]["source_shapes"] == [[64, 32, 5, 5], [64]]


def test_renamed_classifier_with_fresh_and_drop_is_a_complete_transfer(small, tmp_path):
    definition, weights = small
    target = _deploy(tmp_path / "target.prototxt", _small_body(classifier="ip1_new"), 5)
    report = transplant(definition, weights, target, tmp_path / "out.caffemodel",
                        fresh=["ip1_new"], drop=["ip1", "not_in_source"])
    assert [t.name for t in report.copied] == ["conv1", "conv2", "conv3"]
    assert [(t.name, t.note) for t in report.fresh] == [("ip1_new", "fresh as asked (fresh=)")]
    assert [t.name for t in report.skipped] == ["ip1"] and not report.problems


def test_same_count_other_shape_is_reshaped(small, tmp_path):
    definition, weights = small
    target = _deploy(tmp_path / "fcn.prototxt", _small_body(conv_classifier=True))
    dest = tmp_path / "out.caffemodel"
    report = transplant(definition, weights, target, dest)
    assert [(t.name, t.source_shapes, t.target_shapes) for t in report.reshaped] == [
        ("ip1", ((2, 1024), (2,)), ((2, 64, 4, 4), (2,)))]
    source, out = read_weights(weights), read_weights(dest)
    np.testing.assert_array_equal(_bits(out["ip1"][0]).ravel(), _bits(source["ip1"][0]).ravel())
    assert out["ip1"][0].shape == (2, 64, 4, 4)


def test_train_val_definitions_get_input_layers(small, tmp_path):
    definition, weights = small
    data = DataSpec(str(tmp_path / "absent_lmdb"), 8, crop_size=32, mirror=True)
    target = write_text(tmp_path / "val.prototxt", val_net(_small_body(), 2, data, "Net"))
    report = transplant(definition, weights, target, tmp_path / "out.caffemodel")
    assert len(report.copied) == 4
    assert any("replaced by an Input of 1x3x32x32" in n for n in report.notes)
    assert any("'accuracy'" in n and "left out" in n for n in report.notes)


def test_legacy_v1_caffemodel_with_4d_blob_shapes_transplants(small, tmp_path):
    definition, weights = small
    modern = caffe_pb2().NetParameter()
    modern.ParseFromString(weights.read_bytes())
    legacy = caffe_pb2().NetParameter()
    for layer in modern.layer:
        if not layer.blobs:
            continue
        old = legacy.layers.add(name=layer.name)
        for blob in layer.blobs:
            dims = (1,) * (4 - len(blob.shape.dim)) + tuple(blob.shape.dim)
            old.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3],
                          data=blob.data)
    old_file = tmp_path / "v1.caffemodel"
    old_file.write_bytes(legacy.SerializeToString())
    report = transplant(definition, old_file, definition, tmp_path / "out.caffemodel")
    assert len(report.copied) == 4
    assert report.copied[3].source_shapes == ((1, 1, 2, 1024), (1, 1, 1, 2))
    _assert_copied_exactly(read_weights(weights), read_weights(tmp_path / "out.caffemodel"),
                           ["ip1"])


def test_bad_inputs_fail_in_python_before_caffe_can_abort(small, tmp_path):
    definition, weights = small
    out = tmp_path / "out.caffemodel"
    with pytest.raises(FileNotFoundError, match=r"missing\.caffemodel"):
        transplant(definition, tmp_path / "missing.caffemodel", definition, out)
    broken = tmp_path / "broken.prototxt"
    broken.write_text("layer { name: 'x' type: 'Input' oops }")
    with pytest.raises(SurgeryError, match=r"broken\.prototxt"):
        transplant(definition, weights, broken, out)
    # Weights that do not fit their own definition: Caffe's copy_from would CHECK-abort.
    ten = _deploy(tmp_path / "ten.prototxt", _small_body(), num_classes=10)
    with pytest.raises(SurgeryError, match=r"does not match .*ten.prototxt at layer 'ip1'"):
        transplant(ten, weights, definition, out)
    unknown = read_net(definition)
    unknown.layer[1].type = "NoSuchLayer"
    write_text(tmp_path / "unknown.prototxt", unknown)
    with pytest.raises(SurgeryError, match="'conv1' has type 'NoSuchLayer'"):
        transplant(definition, weights, tmp_path / "unknown.prototxt", out)
    with pytest.raises(SurgeryError, match=r"'fc9'.*fresh="):
        transplant(definition, weights, definition, out, fresh=["fc9"])
    with pytest.raises(SurgeryError, match="not a binary caffemodel"):
        transplant(definition, definition, definition, out)
    assert not out.exists()
    out.write_bytes(b"finished")
    with pytest.raises(OutputExistsError):
        transplant(definition, weights, definition, out)
    assert out.read_bytes() == b"finished"


def test_random_weights_are_seeded_and_fill_unset_fillers(tmp_path):
    n = deploy_net(cifarnet, 2, (1, 3, 32, 32), "NoFillers")
    for layer in n.layer:   # strip every filler, as in BVLC AlexNet's deploy.prototxt
        for param in (layer.convolution_param, layer.inner_product_param):
            param.ClearField("weight_filler")
            param.ClearField("bias_filler")
    definition = write_text(tmp_path / "nofill.prototxt", n)
    a = read_weights(random_weights(definition, tmp_path / "a.caffemodel", seed=5))
    b = read_weights(random_weights(definition, tmp_path / "b.caffemodel", seed=5))
    zeros = read_weights(random_weights(definition, tmp_path / "z.caffemodel", seed=5,
                                        unset_filler_std=None))
    _assert_copied_exactly(a, b, a)
    assert 0.005 < a["conv1"][0].std() < 0.02 and a["conv1"][1].any()
    assert not zeros["conv1"][0].any()   # Caffe's default filler: constant 0


def test_random_weights_give_batchnorm_neutral_statistics(tmp_path):
    """Caffe leaves a fresh BatchNorm's mean, variance and factor at 0; a net normalising with
    those stored statistics (a frozen base: use_global_stats) divides 0 by 0. A stand-in for
    pretrained weights holds what a trained one holds: mean 0, variance 1, factor 1."""
    net = caffe_pb2().NetParameter()
    text_format.Merge(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 } '
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        '  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" '
        '  std: 0.1 } } } '
        'layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" '
        '  batch_norm_param { use_global_stats: true } }', net)
    definition = write_text(tmp_path / "bn.prototxt", net)
    stats = read_weights(random_weights(definition, tmp_path / "bn.caffemodel", seed=1))
    mean, variance, factor = stats["conv1/bn"]
    assert not mean.any() and (variance == 1).all() and (factor == 1).all()


# --- the model zoo: table, checksums, downloads -----------------------------------------------


def test_zoo_table_agrees_with_caffes_readmes():
    for name in ("bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet"):
        model, facts = zoo.get(name), zoo.readme_facts(name)
        assert (model.url, model.sha1) == (facts["caffemodel_url"], facts["sha1"])
        assert facts["caffemodel"] == model.filename
        assert model.definition_path().name == "deploy.prototxt"
        defined = {layer.name for layer in read_net(model.definition_path()).layer}
        assert set(model.classifiers) & defined
    vgg = zoo.get("VGG_ILSVRC_16_layers")
    assert vgg.sha1 is None and vgg.url.endswith("/VGG_ILSVRC_16_layers.caffemodel")
    with pytest.raises(zoo.ZooError, match=r"gist\.github\.com/ksimonyan"):
        vgg.definition_path()
    with pytest.raises(zoo.UnknownZooModelError, match="bvlc_alexnet"):
        zoo.get("alexnet")


def _tiny_model(sha1: str | None, url: str = "file:///nowhere") -> zoo.ZooModel:
    return zoo.ZooModel(name="tiny", url=url, sha1=sha1, definition=None, definition_url=None,
                        classifiers=(), source="test")


@pytest.fixture
def payload(tmp_path) -> tuple[Path, str]:
    served = tmp_path / "served"
    served.mkdir()
    path = served / "tiny.caffemodel"
    path.write_bytes(np.arange(300_000, dtype=np.float32).tobytes())
    return path, zoo.sha1_of(path)


@pytest.fixture
def http_root(payload):
    """A local HTTP server on 127.0.0.1 serving the payload's directory."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(payload[0].parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_verify_weights_accepts_the_right_file_and_names_both_sha1s(payload, tmp_path):
    path, sha1 = payload
    assert zoo.verify_weights(_tiny_model(sha1), path) == sha1
    assert zoo.verify_weights(_tiny_model(None), path) == sha1   # nothing published: no check
    with pytest.raises(zoo.WeightsChecksumError) as wrong:
        zoo.verify_weights("bvlc_alexnet", path)
    assert str(path) in str(wrong.value)
    assert "expected sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377" in str(wrong.value)
    assert f"actual sha1 {sha1}" in str(wrong.value)


def test_download_streams_verifies_and_renames_into_place(payload, http_root, tmp_path, capsys):
    path, sha1 = payload
    dest_dir = tmp_path / "weights"
    got = zoo.download_weights(_tiny_model(sha1, f"{http_root}/tiny.caffemodel"), dest_dir)
    assert got == dest_dir / "tiny.caffemodel" and got.read_bytes() == path.read_bytes()
    assert "tiny.caffemodel: 1.1 / 1.1 MB (100%)" in capsys.readouterr().err
    assert sorted(p.name for p in dest_dir.iterdir()) == ["tiny.caffemodel"]
    # file:// works too, and an existing verified file is returned without fetching again.
    other = tmp_path / "other"
    assert zoo.download_weights(_tiny_model(sha1, path.as_uri()), other, progress=False)
    assert zoo.download_weights(_tiny_model(sha1), other, progress=False).is_file()


def test_download_with_a_wrong_sha1_leaves_nothing(payload, http_root, tmp_path):
    dest_dir = tmp_path / "weights"
    with pytest.raises(zoo.WeightsChecksumError) as wrong:
        zoo.download_weights("bvlc_alexnet", dest_dir, progress=False,
                             url=f"{http_root}/tiny.caffemodel")
    assert "expected sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377" in str(wrong.value)
    assert f"actual sha1 {payload[1]}" in str(wrong.value)
    assert list(dest_dir.iterdir()) == []


def test_unreachable_download_says_where_to_get_the_file(http_root, tmp_path):
    dest_dir = tmp_path / "weights"
    for url in ((tmp_path / "missing.caffemodel").as_uri(), f"{http_root}/missing.caffemodel"):
        with pytest.raises(zoo.DownloadError) as failed:
            zoo.download_weights("bvlc_googlenet", dest_dir, progress=False, url=url)
        message = str(failed.value)
        assert url in message
        assert "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel" in message
        assert "405fc5acd08a3bb12de8ee5e23a96bec22f08204" in message
        assert list(dest_dir.iterdir()) == []


def test_weights_path_finds_a_downloaded_file_or_says_where_to_get_it(payload, tmp_path):
    path, sha1 = payload
    model = _tiny_model(sha1, "http://example.org/tiny.caffemodel")
    assert zoo.weights_path(model, [tmp_path / "empty", path.parent]) == path
    with pytest.raises(zoo.WeightsNotFoundError) as missing:
        zoo.weights_path("VGG_ILSVRC_16_layers", [tmp_path])
    message = str(missing.value)
    assert "robots.ox.ac.uk" in message and "no sha1 was ever published" in message
    impostor = tmp_path / "bvlc_reference_caffenet.caffemodel"
    impostor.write_bytes(path.read_bytes())
    with pytest.raises(zoo.WeightsChecksumError, match="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"):
        zoo.weights_path("bvlc_reference_caffenet", [tmp_path / "x", tmp_path])
    assert zoo.weights_path("bvlc_reference_caffenet", [tmp_path], verify=False) == impostor


# --- the BVLC definitions into the kit's nets -------------------------------------------------


def _zoo_pretrained(tmp_path_factory, zoo_name: str, definition_file: str):
    """Random 'pretrained' weights from Caffe's own definition of a model-zoo model."""
    root = tmp_path_factory.mktemp(zoo_name)
    definition = zoo.get(zoo_name).definition_path().with_name(definition_file)
    weights = random_weights(definition, root / f"{zoo_name}.caffemodel", seed=1)
    return definition, weights


@pytest.fixture(scope="session")
def alexnet_pretrained(tmp_path_factory):
    definition, weights = _zoo_pretrained(tmp_path_factory, "bvlc_alexnet", "deploy.prototxt")
    yield definition, weights
    weights.unlink()   # about 240 MB


@pytest.fixture(scope="session")
def caffenet_pretrained(tmp_path_factory):
    definition, weights = _zoo_pretrained(tmp_path_factory, "bvlc_reference_caffenet",
                                          "deploy.prototxt")
    yield definition, weights
    weights.unlink()


@pytest.fixture
def big_tmp(tmp_path):
    """tmp_path, emptied of caffemodels afterwards: pytest keeps recent tmp dirs."""
    yield tmp_path
    for path in tmp_path.glob("*.caffemodel"):
        path.unlink()


def _transplant_zoo(pretrained, model_name: str, target: Path, tmp_path: Path):
    spec = get_model(model_name)
    definition, weights = pretrained
    dest = tmp_path / f"{model_name}.caffemodel"
    report = transplant(definition, weights, target, dest, fresh=spec.classifiers,
                        drop=zoo.get(spec.zoo_model).classifiers)
    return spec, report, dest


@pytest.mark.parametrize(("model_name", "fixture"), [("alexnet-h", "alexnet_pretrained"),
                                                     ("caffenet", "caffenet_pretrained")])
def test_bvlc_alexnet_family_transplants_into_the_kits_net(model_name, fixture, request,
                                                           big_tmp):
    tmp_path = big_tmp
    pretrained = request.getfixturevalue(fixture)
    spec = get_model(model_name)
    target = write_text(tmp_path / "deploy.prototxt",
                        deploy_net(spec.body, 2, (1, 3, spec.crop_size, spec.crop_size), "T"))
    spec, report, dest = _transplant_zoo(pretrained, model_name, target, tmp_path)
    expected = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    assert [t.name for t in report.copied] == expected
    assert [t.name for t in report.fresh] == list(spec.classifiers) == ["fc8_new"]
    assert report.fresh[0].target_shapes == ((2, 4096), (2,))
    assert [t.name for t in report.skipped] == ["fc8"] and not report.problems
    assert not report.reshaped and not report.mismatched
    _assert_copied_exactly(read_weights(pretrained[1]), read_weights(dest), expected)


def test_bvlc_alexnet_without_drop_is_refused_naming_fc8(alexnet_pretrained, tmp_path):
    definition, weights = alexnet_pretrained
    spec = get_model("alexnet-h")
    target = write_text(tmp_path / "deploy.prototxt",
                        deploy_net(spec.body, 2, (1, 3, 227, 227), "T"))
    with pytest.raises(TransplantError, match="source layers the target lacks: fc8"):
        transplant(definition, weights, target, tmp_path / "out.caffemodel",
                   fresh=spec.classifiers)


def test_bvlc_googlenet_transplants_into_googlenet_h_with_three_fresh_classifiers(
        tmp_path_factory, big_tmp):
    tmp_path = big_tmp
    # train_val.prototxt, not deploy: the caffemodel holds the auxiliary heads too.
    pretrained = _zoo_pretrained(tmp_path_factory, "bvlc_googlenet", "train_val.prototxt")
    spec = get_model("googlenet-h")
    data = DataSpec(str(tmp_path / "absent_lmdb"), 1, crop_size=spec.crop_size)
    target = write_text(tmp_path / "val.prototxt", val_net(spec.body, 2, data, "T"))
    spec, report, dest = _transplant_zoo(pretrained, "googlenet-h", target, tmp_path)
    source = read_weights(pretrained[1])
    renamed = {c.replace("_new", "") for c in spec.classifiers}
    assert renamed == {"loss1/classifier", "loss2/classifier", "loss3/classifier"}
    expected = [name for name in source if name not in renamed]
    assert len(expected) == 57 + 4   # 57 conv layers on the main path + 2 aux (conv, fc)
    assert sorted(t.name for t in report.copied) == sorted(expected)
    assert sorted(t.name for t in report.fresh) == sorted(spec.classifiers)
    assert sorted(t.name for t in report.skipped) == sorted(renamed) and not report.problems
    _assert_copied_exactly(source, read_weights(dest), expected)
    pretrained[1].unlink()


V1_NET = """name: "old"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 8
input_dim: 8
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 }
                      bias_filler { type: "gaussian" std: 0.1 } } }
layers { name: "fc8" type: INNER_PRODUCT bottom: "conv1" top: "fc8"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def test_old_format_definitions_like_vgg16s_deploy_are_upgraded_by_caffe(tmp_path):
    old = tmp_path / "old.prototxt"
    old.write_text(V1_NET)
    weights = random_weights(old, tmp_path / "old.caffemodel", seed=2)
    c = caffe_pb2()
    new = c.NetParameter()
    new.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(
        dim=[1, 3, 8, 8])
    new.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"]
                  ).convolution_param.MergeFrom(c.ConvolutionParameter(num_output=4,
                                                                        kernel_size=[3]))
    new.layer.add(name="fc8_new", type="InnerProduct", bottom=["conv1"], top=["fc8_new"]
                  ).inner_product_param.num_output = 3
    target = write_text(tmp_path / "new.prototxt", new)
    report = transplant(old, weights, target, tmp_path / "out.caffemodel",
                        fresh=["fc8_new"], drop=["fc8"])
    assert [t.name for t in report.copied] == ["conv1"]
    assert report.copied[0].source_shapes == ((4, 3, 3, 3), (4,))
    _assert_copied_exactly(read_weights(weights), read_weights(tmp_path / "out.caffemodel"),
                           ["conv1"])
    assert read_weights(weights)["conv1"][1].any()
