"""Fine-tuning policies: which layers learn, at which rate, from which initialisation.

A policy is applied to a generated NetParameter and rewrites every parameterised layer's
`param { lr_mult decay_mult }` entries (weights first, bias second). Layers are addressed in
forward order: everything before the policy's first learning layer is frozen (lr_mult 0),
the layers from it on learn at `tuned_mult`, and the model's renamed classifiers at
`classifier_mult`. BatchNorm statistics are never learned (three `lr_mult: 0` entries); a
BatchNorm below the first learning layer also normalises with its stored statistics in TRAIN
(`use_global_stats: true`, FROZEN_STATISTICS), so a frozen base stays bit-identical.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache

from google.protobuf import text_format

from medtl.caffe_env import caffe, caffe_pb2
from medtl.errors import ConfigError
from medtl.nets.registry import ModelSpec
from medtl.provenance import Sourced, assumed

INITS = ("pretrained", "gaussian", "xavier", "msra")
PARAMETERISED = {"Convolution": 2, "InnerProduct": 2, "Deconvolution": 2, "Scale": 2,
                 "BatchNorm": 3, "PReLU": 1, "Bias": 1, "Embed": 2}

BVLC_BIAS = assumed(2.0, "the paper gives no bias rate; BVLC convention: bias lr 2x weights")
BVLC_DECAY = assumed((1.0, 0.0), "the paper gives no decay multipliers; BVLC convention: "
                                 "weights decay 1x, biases 0x")
# Caffe's BatchNorm overwrites its mean / variance / factor in every TRAIN forward unless
# use_global_stats is set (lr_mult 0 does not stop it): the one Caffe mode that leaves them.
FROZEN_STATISTICS = assumed(True, "frozen BatchNorm: use_global_stats true, the stored "
                                  "statistics used and kept, as a frozen Keras "
                                  "BatchNormalization runs in inference mode (tf.keras "
                                  "BatchNormalization docs, TF >= 2.0: trainable=False); "
                                  "Keras 2.2 normalised a frozen layer with batch statistics "
                                  "(keras-team/keras#9965, not merged), which Caffe cannot do "
                                  "without overwriting the stored ones")

GAUSSIAN_STD = assumed(
    "as defined if Gaussian, else of the variance of the defined filler",
    "the papers give no std. A layer its model definition fills from a Gaussian keeps that "
    "std (BVLC AlexNet 0.01 / 0.005, cifar10_quick); a layer it fills otherwise (BVLC "
    "GoogLeNet: xavier) gets a Gaussian of the same variance, sqrt(1/fan_in) for Caffe's "
    "xavier: the scale BVLC trains GoogLeNet from scratch with, where a flat 0.01 leaves "
    "conv1's gradient ~1e-5 of its weights at the first iteration")


class PolicyError(ConfigError):
    """A policy that does not fit the net it is applied to."""


@dataclass(frozen=True)
class Policy:
    """One fine-tuning setting of one paper.

    first_learning: a layer group of the model ("conv3"), a Caffe layer name, "all" (every
    layer learns), "classifiers" (only the renamed classifiers learn: an off-the-shelf
    feature extractor with a new classifier) or "none" (nothing learns). The renamed
    classifiers learn under every policy but "none", wherever they sit in forward order.
    """

    name: str
    paper: str
    init: Sourced                 # one of INITS
    base_lr: Sourced
    first_learning: Sourced
    tuned_mult: Sourced           # lr_mult of learning layers that are not the classifier
    classifier_mult: Sourced      # lr_mult of the model's renamed classifier layers
    bias_ratio: Sourced = BVLC_BIAS
    decay_mults: Sourced = BVLC_DECAY   # (weights, bias)
    description: str = ""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.init.value not in INITS:
            raise PolicyError(f"policy {self.name}: init must be one of {INITS}, "
                              f"got {self.init.value!r}")


@dataclass(frozen=True)
class LayerRates:
    """The `param` entries of one layer, with the reason for its weight multiplier."""

    layer: str
    type: str
    mults: tuple[tuple[float, float], ...]    # (lr_mult, decay_mult) per parameter blob
    role: str                                 # "frozen", "tuned", "classifier", "statistics"
    why: str
    global_stats: bool = False                # BatchNorm below the first learning layer

    @property
    def learning(self) -> bool:
        return any(lr > 0 for lr, _ in self.mults)


def parameterised_layers(net) -> list:
    return [layer for layer in net.layer if layer.type in PARAMETERISED]


def _first_learning_index(policy: Policy, model: ModelSpec, names: list[str]) -> int:
    target = policy.first_learning.value
    if target == "all":
        return 0
    if target in ("none", "classifiers"):
        return len(names)
    groups = dict(model.layer_groups)
    first = groups[target][0] if target in groups else target
    if first not in names:
        known = ", ".join(g for g, _ in model.layer_groups)
        raise PolicyError(f"policy {policy.name}: {model.name} has no layer or layer group "
                          f"{target!r} (groups: {known})")
    return names.index(first)


def layer_rates(policy: Policy, model: ModelSpec, net) -> list[LayerRates]:
    """Every parameterised layer's multipliers under `policy`, in forward order."""
    layers = parameterised_layers(net)
    names = [layer.name for layer in layers]
    # Deploy nets lack auxiliary classifiers (GoogLeNet's), but never all of them.
    if model.classifiers and not set(model.classifiers) & set(names):
        raise PolicyError(f"{model.name}: none of its classifier layers "
                          f"{', '.join(model.classifiers)} is in the net")
    start = _first_learning_index(policy, model, names)
    w_decay, b_decay = policy.decay_mults.value
    rates = []
    for i, layer in enumerate(layers):
        if layer.type == "BatchNorm":
            rates.append(_statistics(layer.name, frozen=i < start))
            continue
        # New (renamed) classifiers always learn unless nothing does: GoogLeNet's auxiliary
        # classifiers sit below the boundary in forward order but are as fresh as the last.
        if layer.name in model.classifiers and policy.first_learning.value != "none":
            lr, role, why = (policy.classifier_mult.value, "classifier",
                             policy.classifier_mult.describe())
        elif i < start:
            lr, role, why = 0.0, "frozen", policy.first_learning.describe()
        else:
            lr, role, why = policy.tuned_mult.value, "tuned", policy.tuned_mult.describe()
        n_blobs = _blob_count(layer)
        weight = (lr, w_decay if lr else 0.0)
        bias = (lr * policy.bias_ratio.value, b_decay if lr else 0.0)
        if layer.type == "Scale":
            # BatchNorm's affine part: no weight decay on gamma/beta (assumed, as in Keras).
            weight, bias = (lr, 0.0), (lr, 0.0)
            why += "; Scale gamma/beta: rate as the layer, no decay (assumed)"
        rates.append(LayerRates(layer.name, layer.type, (weight, bias)[:n_blobs], role, why))
    return rates


def _statistics(name: str, frozen: bool) -> LayerRates:
    why = "BatchNorm mean/variance are computed, never learned"
    if frozen:
        why += f"; below the first learning layer: {FROZEN_STATISTICS.describe()}"
    return LayerRates(name, "BatchNorm", ((0.0, 0.0),) * 3, "statistics", why,
                      global_stats=frozen and bool(FROZEN_STATISTICS.value))


def _blob_count(layer) -> int:
    if layer.type in ("Convolution", "Deconvolution"):
        return 2 if layer.convolution_param.bias_term else 1
    if layer.type == "InnerProduct":
        return 2 if layer.inner_product_param.bias_term else 1
    if layer.type == "Scale":
        return 2 if layer.scale_param.bias_term else 1
    return PARAMETERISED[layer.type]


def apply_policy(policy: Policy, model: ModelSpec, net):
    """A copy of NetParameter `net` with every layer's `param` and fillers set by `policy`."""
    out = caffe_pb2().NetParameter()
    out.CopyFrom(net)
    by_name = {r.layer: r for r in layer_rates(policy, model, out)}
    for layer in out.layer:
        rates = by_name.get(layer.name)
        if rates is None:
            continue
        del layer.param[:]
        for lr, decay in rates.mults:
            layer.param.add(lr_mult=lr, decay_mult=decay)
        if rates.global_stats:
            layer.batch_norm_param.use_global_stats = True
    _set_fillers(out, policy.init.value, model.crop_size)
    return out


def _set_fillers(net, init: str, input_size: int) -> None:
    """The conv and FC weight fillers `init` asks for; "pretrained" keeps the definition's.

    Xavier / MSRA replace every weight filler (Tajbakhsh Fig. 10). Gaussian keeps the Gaussian
    fillers of a definition and turns any other into a Gaussian of the same variance
    (GAUSSIAN_STD), which needs each weight blob's shape: Caffe builds the net once for it.
    """
    fillers = {layer.name: _weight_filler(layer) for layer in net.layer}
    fillers = {name: f for name, f in fillers.items() if f is not None}
    if init in ("xavier", "msra"):
        for filler in fillers.values():
            filler.Clear()
            filler.type = init
    if init != "gaussian" or all(f.type == "gaussian" for f in fillers.values()):
        return
    shapes = weight_shapes(net, input_size)
    for name, filler in fillers.items():
        if filler.type != "gaussian":
            std = gaussian_std(filler, shapes[name])
            filler.Clear()
            filler.type, filler.std = "gaussian", std


def _weight_filler(layer):
    if layer.type in ("Convolution", "Deconvolution"):
        return layer.convolution_param.weight_filler
    if layer.type == "InnerProduct":
        return layer.inner_product_param.weight_filler
    return None


def gaussian_std(filler, shape: tuple[int, ...]) -> float:
    """The std of a Gaussian with the variance Caffe's `filler` gives a blob of `shape`.

    Caffe (filler.hpp): fan_in = count / shape[0], fan_out = count / shape[1], n by
    variance_norm; xavier draws U(-sqrt(3/n), sqrt(3/n)) (variance 1/n), msra N(0, 2/n).
    """
    count = math.prod(shape)
    fan_in = count / shape[0]
    fan_out = count / shape[1] if len(shape) > 1 else count
    norm = caffe_pb2().FillerParameter
    n = {norm.FAN_IN: fan_in, norm.FAN_OUT: fan_out,
         norm.AVERAGE: (fan_in + fan_out) / 2}[filler.variance_norm]
    if filler.type == "xavier":
        return math.sqrt(1 / n)
    if filler.type == "msra":
        return math.sqrt(2 / n)
    if filler.type == "uniform":
        return (filler.max - filler.min) / math.sqrt(12)
    raise PolicyError(f"no Gaussian of the variance of a {filler.type!r} filler")


DATA_LAYERS = ("Data", "HDF5Data", "ImageData", "WindowData", "MemoryData", "DummyData",
               "Input")


def weight_shapes(net, input_size: int) -> dict[str, tuple[int, ...]]:
    """Layer -> shape of its first parameter blob, as Caffe builds `net` on one
    3 x input_size x input_size image (data layers replaced, losses and accuracy left out)."""
    probe = caffe_pb2().NetParameter()
    labels: set[str] = set()
    for layer in net.layer:
        if layer.type in DATA_LAYERS:
            if not probe.layer:     # one input for the net's (first) data layer
                probe.layer.add(name=layer.name, type="Input", top=[layer.top[0]]
                                ).input_param.shape.add(dim=[1, 3, input_size, input_size])
            labels.update(layer.top[1:])
            continue
        if labels & set(layer.bottom):
            continue
        copy = probe.layer.add()
        copy.CopyFrom(layer)
        del copy.include[:], copy.exclude[:]
        constant_fillers(copy)
    return _built_weight_shapes(text_format.MessageToString(probe))


@lru_cache(maxsize=8)
def _built_weight_shapes(net_text: str) -> dict[str, tuple[int, ...]]:
    c = caffe()
    c.set_mode_cpu()
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as tmp:
        tmp.write(net_text)
        tmp.flush()
        built = c.Net(tmp.name, c.TEST)
    return {name: tuple(blobs[0].shape) for name, blobs in built.params.items()}


def constant_fillers(layer) -> None:
    """Every filler of `layer` made constant: for nets built only to read shapes (filling
    millions of random weights is most of the time it takes to build them)."""
    for params in (layer.convolution_param, layer.inner_product_param, layer.scale_param,
                   layer.bias_param, layer.prelu_param, layer.embed_param):
        for name in ("weight_filler", "bias_filler", "filler"):
            if name in params.DESCRIPTOR.fields_by_name and params.HasField(name):
                getattr(params, name).Clear()
                getattr(params, name).type = "constant"
