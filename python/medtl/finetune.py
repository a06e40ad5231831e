"""Fine-tuning policies: which layers learn, at which rate, from which initialisation.

A policy is applied to a generated NetParameter and rewrites every parameterised layer's
`param { lr_mult decay_mult }` entries (weights first, bias second). Layers are addressed in
forward order: everything before the policy's first learning layer is frozen (lr_mult 0),
the layers from it on learn at `tuned_mult`, and the model's renamed classifiers at
`classifier_mult`. BatchNorm statistics are never learned (three `lr_mult: 0` entries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medtl.caffe_env import caffe_pb2
from medtl.errors import ConfigError
from medtl.nets.registry import ModelSpec
from medtl.provenance import Sourced, assumed

INITS = ("pretrained", "gaussian", "xavier", "msra")
PARAMETERISED = {"Convolution": 2, "InnerProduct": 2, "Deconvolution": 2, "Scale": 2,
                 "BatchNorm": 3, "PReLU": 1, "Bias": 1, "Embed": 2}

BVLC_BIAS = assumed(2.0, "the paper gives no bias rate; BVLC convention: bias lr 2x weights")
BVLC_DECAY = assumed((1.0, 0.0), "the paper gives no decay multipliers; BVLC convention: "
                                 "weights decay 1x, biases 0x")


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
            rates.append(LayerRates(layer.name, layer.type, ((0.0, 0.0),) * 3, "statistics",
                                    "BatchNorm mean/variance are computed, never learned"))
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
        _set_filler(layer, policy.init.value)
    return out


def _set_filler(layer, init: str) -> None:
    """Xavier / MSRA replace the Gaussian fillers of conv and FC weights (Tajbakhsh Fig. 10)."""
    if init not in ("xavier", "msra"):
        return
    if layer.type in ("Convolution", "Deconvolution"):
        filler = layer.convolution_param.weight_filler
    elif layer.type == "InnerProduct":
        filler = layer.inner_product_param.weight_filler
    else:
        return
    filler.Clear()
    filler.type = init
