"""Every claim in a generated file's header holds in the file itself.

The header of each canonical net and solver states the configuration's values with their
provenance (`key: value <- source`); this reads every such line of every file under prototxt/
and solvers/ and checks it against what Caffe will read: weight fillers, `param` multipliers,
the classifiers' num_output, the data layers' batch size and transform_param, the solver's
fields. A header key no check knows fails the test, so a new claim needs a check.
"""

from __future__ import annotations

import ast
import math
import re
from functools import cache
from pathlib import Path

import pytest

from medtl import generate
from medtl.finetune import gaussian_std, weight_shapes
from medtl.inspect_net import comment_provenance
from medtl.nets.registry import get_model
from medtl.nets.variants import DataSpec, deploy_net, train_net
from medtl.prototxt import read_net, read_solver

REPO = generate.REPO
CANONICAL = sorted(path.relative_to(REPO).as_posix()
                   for folder in ("prototxt", "solvers")
                   for path in (REPO / folder).rglob("*.prototxt"))
TITLE = re.compile(r"^# MedTL-Caffe canonical (net|solver): .*\(model (\S+), policy (\S+)\)$")
RATE = re.compile(r"(weights|bias) lr ([-+.e\d]+) \(lr_mult ([-+.e\d]+)\), decay_mult ([-+.e\d]+)")
NOTES = {"policy note", "model note"}
POLICY_KEYS = {"init", "base_lr", "first learning layer", "tuned lr_mult", "classifier lr_mult",
               "bias lr ratio", "decay mults (weights, bias)", "classes", "gaussian std",
               "transform crop_size", "transform mean_file", "transform mirror",
               "transform mean_value", "transform scale"}
SOLVER_FIELDS = {"type", "base_lr", "lr_policy", "gamma", "momentum", "momentum2", "delta",
                 "rms_decay", "weight_decay", "max_iter", "test_iter", "test_interval",
                 "snapshot", "stepsize", "random_seed"}
SOLVER_KEYS = POLICY_KEYS | SOLVER_FIELDS | {
    "batch_size", "val_batch_size", "iters_per_epoch", "max_epochs", "step_epochs",
    "training set", "validation set"}
WEIGHTED = ("Convolution", "Deconvolution", "InnerProduct")
DATA = ("Data", "HDF5Data")
OUTPUTS = ("SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "Softmax", "Sigmoid")


@cache
def _net(rel: str):
    return read_net(REPO / rel)


def _claims(path: Path) -> dict[str, object]:
    _, header = comment_provenance(path)
    return {key: _literal(value) for key, (value, _) in header.items() if key not in NOTES}


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _title(path: Path) -> tuple[str, str, str]:
    match = TITLE.match(path.read_text().splitlines()[0])
    assert match, f"{path}: no generated title line"
    return match.groups()


def _filler(layer):
    return (layer.convolution_param.weight_filler if layer.type != "InnerProduct"
            else layer.inner_product_param.weight_filler)


def _mults(layer) -> list[tuple[float, float]]:
    return [(p.lr_mult, p.decay_mult) for p in layer.param]


def _flat(mults: list[tuple[float, float]]) -> list[float]:
    return [value for pair in mults for value in pair]


def _learnable(net) -> list:
    return [layer for layer in net.layer if layer.param and layer.type != "BatchNorm"]


# ------------------------------------------------------------------ the policy's claims

def _check_init(net, claims, model) -> None:
    init = claims["init"]
    fillers = {layer.name: _filler(layer) for layer in net.layer if layer.type in WEIGHTED}
    if init in ("gaussian", "xavier", "msra"):
        assert {f.type for f in fillers.values()} == {init}, init
    else:   # weights come from copy_from; only the renamed classifiers start from fillers
        assert init == "pretrained", init
        assert set(model.classifiers) & set(fillers)
    assert ("gaussian std" in claims) == (init == "gaussian")


def _check_first_learning(net, claims, model) -> None:
    target = claims["first learning layer"]
    rows = [layer for layer in _learnable(net) if layer.name not in model.classifiers]
    learning = [layer.param[0].lr_mult > 0 for layer in rows]
    classifiers = [layer for layer in _learnable(net) if layer.name in model.classifiers]
    if target == "all":
        assert all(learning)
    elif target in ("none", "classifiers"):
        assert not any(learning)
        assert all((layer.param[0].lr_mult > 0) == (target == "classifiers")
                   for layer in classifiers)
    else:
        first = dict(model.layer_groups).get(target, (target,))[0]
        start = [layer.name for layer in rows].index(first)
        assert learning == [i >= start for i in range(len(rows))], target


def _check_rates(net, claims, model) -> None:
    tuned, new = claims["tuned lr_mult"], claims["classifier lr_mult"]
    ratio = claims["bias lr ratio"]
    w_decay, b_decay = claims["decay mults (weights, bias)"]
    for layer in _learnable(net):
        mults = _mults(layer)
        lr = mults[0][0]
        if layer.name in model.classifiers and claims["first learning layer"] != "none":
            assert lr == pytest.approx(new), layer.name
        elif lr:
            assert lr == pytest.approx(tuned), layer.name
        if layer.type == "Scale":       # gamma / beta: the layer's rate, no decay
            assert _flat(mults) == pytest.approx([lr, 0.0] * len(mults)), layer.name
            continue
        expected = [lr, w_decay if lr else 0.0, lr * ratio, b_decay if lr else 0.0]
        assert _flat(mults) == pytest.approx(expected[:2 * len(mults)]), layer.name
    for layer in net.layer:
        if layer.type == "BatchNorm":
            assert _mults(layer) == [(0.0, 0.0)] * 3, layer.name


def _check_classes(net, claims) -> None:
    """Every classifier that feeds a loss or the output probabilities has `classes` outputs."""
    producers = {top: layer for layer in net.layer for top in layer.top if not layer.bottom
                 or top not in layer.bottom}
    heads = {layer.bottom[0] for layer in net.layer if layer.type in OUTPUTS}
    outputs = {producers[top].inner_product_param.num_output for top in heads}
    assert heads and outputs == {claims["classes"]}


def _check_layer_comments(path: Path, net, base_lr: float) -> None:
    """Each parameterised layer's `# role: weights lr X (lr_mult Y), decay_mult Z` comment."""
    mults = {layer.name: _mults(layer) for layer in net.layer}
    current, seen = None, 0
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith('name: "'):
            current = stripped[len('name: "'):-1]
        elif stripped.startswith("#") and current in mults and RATE.search(stripped):
            _check_rate_text(stripped, mults[current], base_lr, current)
            seen += 1
    assert seen == len([m for m in mults.values() if m and len(m) < 3])


def _check_rate_text(text: str, mults, base_lr: float, where: str) -> None:
    found = RATE.findall(text)
    assert len(found) == len(mults), where
    for (_, lr, lr_mult, decay), (want_mult, want_decay) in zip(found, mults, strict=True):
        assert float(lr_mult) == pytest.approx(want_mult, rel=1e-5), where
        assert float(decay) == pytest.approx(want_decay, rel=1e-5), where
        assert float(lr) == pytest.approx(base_lr * want_mult, rel=1e-5), where


# ------------------------------------------------------------------ input claims

def _data_layer(net):
    layers = [layer for layer in net.layer if layer.type in DATA]
    assert len(layers) == 1
    return layers[0]


def _batch(net) -> int:
    layer = _data_layer(net)
    return layer.data_param.batch_size or layer.hdf5_data_param.batch_size


def _check_transform(nets: dict[str, object], claims) -> None:
    keys = {k for k in claims if k.startswith("transform ")}
    for kind, net in nets.items():
        if kind == "deploy":
            dims = list(net.layer[0].input_param.shape[0].dim)
            if claims.get("transform crop_size"):
                assert dims[2:] == [claims["transform crop_size"]] * 2
            continue
        layer = _data_layer(net)
        if layer.type == "HDF5Data":
            assert not keys, "HDF5Data has no transform_param"
            continue
        transform = layer.transform_param
        assert transform.crop_size == claims["transform crop_size"]
        if "transform mean_value" in claims:   # 8-bit records, a fixed per-channel transform
            assert list(transform.mean_value) == pytest.approx(claims["transform mean_value"])
            assert transform.scale == pytest.approx(claims["transform scale"])
            assert not transform.mean_file
        else:
            assert claims["transform mean_file"] == "training-set mean image"
            assert transform.mean_file.endswith("mean.binaryproto")
        assert transform.HasField("mirror"), "mirror is written explicitly"
        assert transform.mirror == (claims["transform mirror"] and kind == "train")


# ------------------------------------------------------------------ solver claims

def _check_solver(path: Path, claims) -> dict[str, object]:
    solver = read_solver(path)
    fixed = solver.lr_policy == "fixed"
    for key in SOLVER_FIELDS & set(claims):
        if fixed and key in ("gamma", "stepsize"):
            assert not solver.HasField(key), f"{key} is unused with a fixed rate"
            continue
        value = getattr(solver, key)
        value = value[0] if key == "test_iter" else value
        if isinstance(value, str):
            assert value == claims[key], key
        else:
            assert value == pytest.approx(claims[key], rel=1e-6), key
    nets = {"train": _net(solver.train_net), "val": _net(solver.test_net[0])}
    ipe = claims["iters_per_epoch"]
    assert _batch(nets["train"]) == claims["batch_size"]
    assert _batch(nets["val"]) == claims["val_batch_size"]
    assert ipe == math.ceil(claims["training set"] / claims["batch_size"])
    assert solver.max_iter == claims["max_epochs"] * ipe
    if fixed:
        assert "stepsize" not in claims
    else:
        assert solver.stepsize == claims["step_epochs"] * ipe
    assert claims["validation set"] > 0 and solver.test_iter[0] > 0
    _check_effective_rates(path, nets["train"], solver.base_lr)
    return nets


def _check_effective_rates(path: Path, train, base_lr: float) -> None:
    """The header's per-layer table: `#   layer   role: weights lr ...`."""
    mults = {layer.name: _mults(layer) for layer in train.layer}
    lines = path.read_text().splitlines()
    start = lines.index("# effective learning rates at epoch 0 (base_lr x lr_mult), per layer:")
    rows = [line[4:].split(maxsplit=1) for line in lines[start + 1:] if line.startswith("#   ")]
    assert [name for name, _ in rows] == [layer.name for layer in train.layer if layer.param]
    for name, text in rows:
        if RATE.search(text):
            _check_rate_text(text, mults[name], base_lr, name)
        else:
            assert text.startswith("statistics:") and mults[name] == [(0.0, 0.0)] * 3


# ------------------------------------------------------------------ the test

@pytest.mark.parametrize("rel", CANONICAL)
def test_every_header_claim_holds_in_its_file(rel):
    path = REPO / rel
    kind, model_name, _ = _title(path)
    model = get_model(model_name)
    claims = _claims(path)
    known = SOLVER_KEYS if kind == "solver" else POLICY_KEYS
    assert not set(claims) - known, f"header claims without a check: {set(claims) - known}"
    if kind == "solver":
        nets = _check_solver(path, claims)
        net = nets["train"]
    else:
        net = _net(rel)
        nets = {path.stem: net}
        _check_layer_comments(path, net, claims["base_lr"])
    _check_init(net, claims, model)
    _check_first_learning(net, claims, model)
    _check_rates(net, claims, model)
    _check_classes(net, claims)
    _check_transform(nets, claims)


def test_header_claims_are_read_from_every_file():
    assert len(CANONICAL) > 300
    assert all(len(_claims(REPO / rel)) >= 8 for rel in CANONICAL)


# ------------------------------------------------------------------ Gaussian stds

def _definition(model, classes: int, kind: str):
    """The model's own net (fillers as defined, before any policy)."""
    if kind == "deploy":
        return deploy_net(model.body, classes, (1, 3, model.crop_size, model.crop_size), "def")
    return train_net(model.body, classes, DataSpec("x", 1), "def")


@pytest.mark.parametrize("rel", [rel for rel in CANONICAL if rel.startswith("prototxt/")
                                 and _claims(REPO / rel)["init"] == "gaussian"])
def test_gaussian_init_keeps_defined_gaussians_and_matches_other_fillers_variance(rel):
    """Shin's "random Gaussian" init: AlexNet / CifarNet keep their definitions' stds;
    GoogLeNet's xavier layers become Gaussians of xavier's variance, std = sqrt(1/fan_in)."""
    path = REPO / rel
    _, model_name, _ = _title(path)
    model, net = get_model(model_name), _net(rel)
    definition = _definition(model, _claims(path)["classes"], path.stem)
    defined = {layer.name: _filler(layer) for layer in definition.layer
               if layer.type in WEIGHTED}
    replaced = {name for name, f in defined.items() if f.type != "gaussian"}
    shapes = weight_shapes(net, model.crop_size) if replaced else {}
    for layer in net.layer:
        if layer.type not in WEIGHTED:
            continue
        filler, original = _filler(layer), defined[layer.name]
        assert filler.type == "gaussian", layer.name
        if layer.name not in replaced:
            assert filler.std == original.std, layer.name
        else:
            fan_in = math.prod(shapes[layer.name]) / shapes[layer.name][0]
            assert filler.std == pytest.approx(gaussian_std(original, shapes[layer.name]))
            assert filler.std == pytest.approx(1 / math.sqrt(fan_in), rel=1e-6), layer.name


def test_googlenet_ri_is_gaussian_like_its_header():
    """Issue 10 item 4: GoogLeNet-RI-H/-L said `init: 'gaussian'` and had xavier fillers."""
    for rel in ("prototxt/shin2016/ln_abdomen/googlenet-h_ri/train.prototxt",
                "prototxt/shin2016/ln_mediastinum/googlenet-l_ri/train.prototxt",
                "prototxt/shin2016/ild_slice/googlenet-h_ri/deploy.prototxt"):
        fillers = {_filler(layer).type for layer in _net(rel).layer if layer.type in WEIGHTED}
        assert fillers == {"gaussian"}, rel
    conv1 = next(layer for layer in _net("prototxt/shin2016/ln_abdomen/googlenet-h_ri/"
                                         "train.prototxt").layer if layer.name == "conv1/7x7_s2")
    assert _filler(conv1).std == pytest.approx(1 / math.sqrt(3 * 7 * 7))


# ------------------------------------------------------------------ transform provenance

def test_random_crop_mean_and_mirror_are_assumptions_of_every_lmdb_configuration():
    """Issue 10 item 6: the -H nets' random 227/224 crop of 256 and the mean subtraction were
    in no header and no assumption list; mirror is written and assumed off."""
    from medtl.protocols import configurations

    for cfg in configurations():
        found = cfg.provenance()
        if cfg.stored_input is not None:     # 8-bit LMDB at the input size, a fixed transform
            assert found["transform.crop_size"].value == 0
            assert "transform.mean_value" in cfg.assumptions()
            assert "transform.scale" in cfg.assumptions()
            continue
        if cfg.loss != "softmax":
            assert not [k for k in found if k.startswith("transform.")]
            continue
        model = get_model(cfg.model)
        assumed = cfg.assumptions()
        assert "BVLC" in assumed["transform.mean_file"]
        assert found["transform.mirror"].value is False and "transform.mirror" in assumed
        if model.image_size > model.crop_size:
            assert found["transform.crop_size"].value == model.crop_size
            assert "random" in assumed["transform.crop_size"]
            assert "BVLC" in assumed["transform.crop_size"]
        else:
            assert found["transform.crop_size"].value == 0
    header = _claims(REPO / "prototxt/shin2016/ild_patch/alexnet-h_ri/train.prototxt")
    assert header["transform crop_size"] == 227 and header["transform mirror"] is False


def test_overfeat_and_vgg_cite_the_section_that_describes_them():
    """Issue 10 item 10: Shin describes OverFeat and VGGNet in Sec. IV-C (d, e), not IV-A."""
    for name in ("overfeat", "vgg16"):
        source = get_model(name).source
        assert source.startswith("Shin 2016 Sec. IV-C") and "IV-A" not in source
        header = (REPO / f"prototxt/shin2016/ild_slice/{name}_tl/train.prototxt").read_text()
        assert "# model: Shin 2016 Sec. IV-C" in header
