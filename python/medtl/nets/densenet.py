"""DenseNet-121 (Boit & Zeng 2019), named as the widely used Caffe port.

Layer names, order and hyper-parameters follow shicai/DenseNet-Caffe `DenseNet_121.prototxt`
(converted from Huang et al.'s Torch models): stem `conv1` (7x7/2, no bias) -> `conv1/bn`
(BatchNorm) -> `conv1/scale` (Scale with bias) -> `relu1` -> `pool1` (3x3/2 max, pad 1, rounded
down); dense layers `conv{s}_{i}/x1/bn, /x1/scale, relu{s}_{i}/x1, conv{s}_{i}/x1` (1x1, 128)
then `.../x2/...` (3x3, 32) and `concat_{s}_{i}`, for stages s = 2..5 of 6, 12, 24, 16
layers; transitions `conv{s}_blk/bn, /scale, relu{s}_blk, conv{s}_blk` (1x1, half the
channels) and `pool{s}` (2x2/2 average); then `conv5_blk/bn, /scale, relu5_blk` and `pool5`
(global average). No dropout. So `copy_from` of the port's caffemodel transfers every layer
but the classifier: the port's `fc6` (a 1x1 convolution, 1000 outputs) becomes `fc6_new`.

Each Keras BatchNormalization is a Caffe `BatchNorm` (mean, variance, moving-average factor;
statistics, never learned: every `param` is lr_mult 0 decay_mult 0) followed by a `Scale`
(gamma, beta; learned). The body leaves `use_global_stats` unset; the fine-tuning policy sets
it on every BatchNorm of the frozen part (medtl.finetune.FROZEN_STATISTICS), since Caffe
otherwise overwrites the stored statistics in every TRAIN forward whatever the lr_mult: Boit's
feature extraction freezes all 121, his fine-tuning 120 (`conv5_blk/bn` lies above the
boundary, as Keras' final `bn`, and keeps learning its statistics). :func:`keras_to_caffe`
maps keras.applications.DenseNet121's layer names onto these layers, :func:`caffe_layers_from`
gives Boit's fine-tuning boundary.

Two heads (select the body or the ModelSpec):
- `densenet121` / DENSENET121: pool5 -> `fc6_new` (num_classes).
- `densenet121_boit_head` / DENSENET121_BOIT: Boit's "dense classifier" (Methodology,
  Strategy 1): pool5 -> `fc_hidden_new` (BOIT_HIDDEN units) -> ReLU -> `fc6_new`; use the
  sigmoid loss variant (binary cross-entropy) with num_classes = 1 for the binary task.

Parameters, counted by Caffe from the generated nets: every blob element ("all", including
BatchNorm's statistics and its one-element factor per layer) and the learnable ones (all
minus BatchNorm's blobs):

| model            | classes | all       | learnable |
|------------------|---------|-----------|-----------|
| densenet121      | 2       | 7,039,675 | 6,955,906 |
| densenet121      | 14      | 7,051,975 | 6,968,206 |
| densenet121      | 1000    | 8,062,625 | 7,978,856 |
| densenet121-boit | 1       | 7,300,282 | 7,216,513 |

At 1000 classes "all" is keras.applications.DenseNet121's 8,062,504 parameters plus the
121 BatchNorm moving-average factors Caffe stores; "learnable" equals Keras's trainable
count (7,978,856).
"""

from __future__ import annotations

from medtl.caffe_env import caffe
from medtl.errors import MedtlError
from medtl.nets.body import Head
from medtl.nets.layers import constant, learned_param
from medtl.nets.registry import ModelSpec

PORT = "shicai/DenseNet-Caffe DenseNet_121.prototxt"
BLOCKS = (6, 12, 24, 16)   # Huang et al. 2017 Table 1, DenseNet-121; port stages conv2..conv5
GROWTH = 32                # k = 32 (port README: "DenseNet 121 (k=32)")
BOTTLENECK = 4 * GROWTH    # 1x1 conv width of each dense layer (port: num_output 128)
STEM_FILTERS = 64          # port conv1 num_output
BN_EPS = 1e-5              # port batch_norm_param eps (Keras uses 1.001e-5)
FIRST_STAGE = 2            # the port numbers the dense blocks conv2 ... conv5

# Input of the port's ImageNet weights (README): BGR mean subtracted, then scale 0.017 in
# place of the per-channel std; 224 centre crop of 256xN images.
MEAN_BGR = (103.94, 116.78, 123.68)
INPUT_SCALE = 0.017

CLASSIFIER = "fc6_new"
HIDDEN = "fc_hidden_new"
LOSS = "loss"
# assumed: the poster gives no hidden width. 256 is the dense classifier of the Keras
# feature-extraction / fine-tuning recipe (Chollet, Deep Learning with Python Sec. 5.3) whose
# steps and vocabulary the poster follows (conv base frozen, dense classifier with ReLU and
# sigmoid, binary cross-entropy, ImageDataGenerator, "unfreeze from layer X").
BOIT_HIDDEN = 256
# Boit & Zeng 2019, Discussion: "We unfroze a specific convNet layer at 'conv5_block16_2_conv'".
BOIT_UNFREEZE_FROM = "conv5_block16_2_conv"

# Conv weights (the port ships weights only, no fillers) -- assumed: Huang et al.'s Torch
# code initialises convs N(0, sqrt(2 / (k*k*out))), which is Caffe's msra with FAN_OUT.
CONV_FILLER = dict(type="msra", variance_norm=1)    # FillerParameter.FAN_OUT
# New dense layers -- assumed: Keras Dense defaults (Boit used Keras): glorot_uniform, i.e.
# Caffe's xavier with AVERAGE, and zero bias.
DENSE_FILLER = dict(type="xavier", variance_norm=2)  # FillerParameter.AVERAGE

BN_PARAM = [dict(lr_mult=0, decay_mult=0)] * 3       # mean, variance, factor: never learned
SCALE_PARAM = [dict(lr_mult=1, decay_mult=0)] * 2    # gamma, beta (the policy rewrites these)
CONV_PARAM = [dict(lr_mult=1, decay_mult=1)]         # bias_term false: one blob


class UnknownKerasLayerError(MedtlError, KeyError):
    """A Keras DenseNet121 layer name with no counterpart in the Caffe net."""

    def __str__(self) -> str:
        return str(self.args[0])


# --- layer names ------------------------------------------------------------------------

def _stage_names(stage: int, layers: int) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """(Keras name, ((Caffe name, Caffe type), ...)) for one dense block, in forward order."""
    out = []
    for i in range(1, layers + 1):
        k, c = f"conv{stage}_block{i}", f"conv{stage}_{i}"
        out += [
            (f"{k}_0_bn", ((f"{c}/x1/bn", "BatchNorm"), (f"{c}/x1/scale", "Scale"))),
            (f"{k}_0_relu", ((f"relu{stage}_{i}/x1", "ReLU"),)),
            (f"{k}_1_conv", ((f"{c}/x1", "Convolution"),)),
            (f"{k}_1_bn", ((f"{c}/x2/bn", "BatchNorm"), (f"{c}/x2/scale", "Scale"))),
            (f"{k}_1_relu", ((f"relu{stage}_{i}/x2", "ReLU"),)),
            (f"{k}_2_conv", ((f"{c}/x2", "Convolution"),)),
            (f"{k}_concat", ((f"concat_{stage}_{i}", "Concat"),)),
        ]
    return out


def _transition_names(stage: int) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    k, c = f"pool{stage}", f"conv{stage}_blk"
    return [
        (f"{k}_bn", ((f"{c}/bn", "BatchNorm"), (f"{c}/scale", "Scale"))),
        (f"{k}_relu", ((f"relu{stage}_blk", "ReLU"),)),
        (f"{k}_conv", ((c, "Convolution"),)),
        (f"{k}_pool", ((f"pool{stage}", "Pooling"),)),
    ]


def _keras_layers() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """keras.applications.DenseNet121 (include_top=False) in forward order, with the Caffe
    layers each one becomes. ZeroPadding2D layers have none: the port folds them into pads."""
    last = FIRST_STAGE + len(BLOCKS) - 1
    table = [
        ("conv1/conv", (("conv1", "Convolution"),)),
        ("conv1/bn", (("conv1/bn", "BatchNorm"), ("conv1/scale", "Scale"))),
        ("conv1/relu", (("relu1", "ReLU"),)),
        ("pool1", (("pool1", "Pooling"),)),
    ]
    for stage, layers in enumerate(BLOCKS, FIRST_STAGE):
        table += _stage_names(stage, layers)
        if stage < last:
            table += _transition_names(stage)
    table += [
        ("bn", ((f"conv{last}_blk/bn", "BatchNorm"), (f"conv{last}_blk/scale", "Scale"))),
        # Keras 2.2.5 / keras-applications 1.0.7 on; earlier releases lacked this ReLU.
        ("relu", ((f"relu{last}_blk", "ReLU"),)),
        ("avg_pool", ((f"pool{last}", "Pooling"),)),
    ]
    return tuple(table)


KERAS_LAYERS = _keras_layers()
_KERAS_INDEX = {name: i for i, (name, _) in enumerate(KERAS_LAYERS)}
_PARAMETERISED = ("Convolution", "BatchNorm", "Scale")
_LEARNABLE = ("Convolution", "Scale")


def keras_to_caffe(keras_name: str) -> list[str]:
    """The Caffe layers a keras.applications.DenseNet121 layer becomes.

    A Keras BatchNormalization maps to two Caffe layers, BatchNorm then Scale.
    """
    try:
        return [name for name, _ in KERAS_LAYERS[_KERAS_INDEX[keras_name]][1]]
    except KeyError:
        raise UnknownKerasLayerError(_unknown(keras_name)) from None


def _unknown(keras_name: str) -> str:
    hint = ""
    if keras_name in ("fc1000", "predictions"):
        hint = ("; it is the ImageNet classifier, which Boit removes: the new classifier is "
                f"{CLASSIFIER!r}, never copied")
    elif keras_name.startswith(("zero_padding2d", "input")):
        hint = "; the Caffe port folds zero padding into conv1's and pool1's pad"
    return (f"{keras_name!r} is not a layer of keras.applications.DenseNet121{hint}. Known "
            "names: conv1/conv, conv1/bn, conv1/relu, pool1, conv{2..5}_block{i}_{0_bn, 0_relu, "
            "1_conv, 1_bn, 1_relu, 2_conv, concat} (6, 12, 24, 16 blocks), pool{2,3,4}_{bn, "
            "relu, conv, pool}, bn, relu, avg_pool")


def caffe_layers_from(keras_name: str) -> list[str]:
    """Learnable Caffe layers (Convolution, Scale) from `keras_name` upward, in forward order.

    Keras' "unfreeze from layer X" makes X and every later base layer trainable; in Caffe
    these are the convolutions and the Scale halves of the batch norms. BatchNorm statistics
    are left out: Caffe never learns them. The new head is not part of the Keras base: add
    the ModelSpec's classifiers.
    """
    if keras_name not in _KERAS_INDEX:
        raise UnknownKerasLayerError(_unknown(keras_name))
    return [name for _, caffe_layers in KERAS_LAYERS[_KERAS_INDEX[keras_name]:]
            for name, kind in caffe_layers if kind in _LEARNABLE]


# Boit's strategy 2 as a Caffe layer: the first layer that learns (conv5_16/x2).
BOIT_FIRST_LEARNING = keras_to_caffe(BOIT_UNFREEZE_FROM)[0]


# --- the body -----------------------------------------------------------------------------

def _bn_scale_relu(n, bottom, bn: str, scale: str, relu: str):
    """BatchNorm (own top, as in the port), Scale and ReLU in place on it."""
    L = caffe().layers
    n[bn] = L.BatchNorm(bottom, param=BN_PARAM, batch_norm_param=dict(eps=BN_EPS))
    n[scale] = L.Scale(n[bn], param=SCALE_PARAM, scale_param=dict(bias_term=True),
                       in_place=True)
    n[relu] = L.ReLU(n[bn], in_place=True)
    return n[bn]


def _conv(bottom, nout: int, ks: int, *, stride: int = 1, pad: int = 0):
    extra = {}
    if pad:
        extra["pad"] = pad
    if stride != 1:
        extra["stride"] = stride
    return caffe().layers.Convolution(bottom, param=CONV_PARAM, num_output=nout,
                                      bias_term=False, kernel_size=ks,
                                      weight_filler=CONV_FILLER, **extra)


def _dense_layer(n, bottom, stage: int, i: int):
    c, r = f"conv{stage}_{i}", f"relu{stage}_{i}"
    x = _bn_scale_relu(n, bottom, f"{c}/x1/bn", f"{c}/x1/scale", f"{r}/x1")
    n[f"{c}/x1"] = _conv(x, BOTTLENECK, 1)
    x = _bn_scale_relu(n, n[f"{c}/x1"], f"{c}/x2/bn", f"{c}/x2/scale", f"{r}/x2")
    n[f"{c}/x2"] = _conv(x, GROWTH, 3, pad=1)
    n[f"concat_{stage}_{i}"] = caffe().layers.Concat(bottom, n[f"{c}/x2"])
    return n[f"concat_{stage}_{i}"]


def _transition(n, bottom, stage: int, channels: int):
    P = caffe().params.Pooling
    c = f"conv{stage}_blk"
    x = _bn_scale_relu(n, bottom, f"{c}/bn", f"{c}/scale", f"relu{stage}_blk")
    n[c] = _conv(x, channels // 2, 1)   # compression 0.5 (Huang et al. 2017, DenseNet-BC)
    n[f"pool{stage}"] = caffe().layers.Pooling(n[c], pool=P.AVE, kernel_size=2, stride=2)
    return n[f"pool{stage}"]


def _dense(bottom, nout: int):
    return caffe().layers.InnerProduct(bottom, param=learned_param(), num_output=nout,
                                       weight_filler=DENSE_FILLER, bias_filler=constant(0))


def _densenet121(n, bottom, num_classes: int, hidden: int) -> list[Head]:
    c = caffe()
    L, P = c.layers, c.params.Pooling
    n.conv1 = _conv(bottom, STEM_FILTERS, 7, stride=2, pad=3)
    x = _bn_scale_relu(n, n.conv1, "conv1/bn", "conv1/scale", "relu1")
    # The port rounds pool1 down (README: "ceil_mode: false"), matching Torch and Keras.
    n.pool1 = L.Pooling(x, pool=P.MAX, kernel_size=3, stride=2, pad=1, round_mode=P.FLOOR)
    top, channels = n.pool1, STEM_FILTERS
    last = FIRST_STAGE + len(BLOCKS) - 1
    for stage, layers in enumerate(BLOCKS, FIRST_STAGE):
        for i in range(1, layers + 1):
            top = _dense_layer(n, top, stage, i)
        channels += layers * GROWTH
        if stage < last:
            top = _transition(n, top, stage, channels)
            channels //= 2
    x = _bn_scale_relu(n, top, f"conv{last}_blk/bn", f"conv{last}_blk/scale", f"relu{last}_blk")
    n[f"pool{last}"] = L.Pooling(x, pool=P.AVE, global_pooling=True)
    top = n[f"pool{last}"]
    if hidden:
        n[HIDDEN] = _dense(top, hidden)
        n["relu_hidden_new"] = L.ReLU(n[HIDDEN], in_place=True)
        top = n[HIDDEN]
    # assumed: InnerProduct, where the port's fc6 is a 1x1 convolution: the same on the 1x1
    # pooled blob, and the output is N x C like every other model's.
    n[CLASSIFIER] = _dense(top, num_classes)
    return [Head(n[CLASSIFIER], LOSS)]


def densenet121(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """DenseNet-121 (224x224) with one new classifier `fc6_new`; `deploy` changes nothing."""
    if num_classes < 1:
        raise ValueError(f"densenet121: num_classes must be at least 1, got {num_classes}")
    return _densenet121(n, bottom, num_classes, 0)


def densenet121_boit_head(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """DenseNet-121 with Boit's dense classifier: `fc_hidden_new` + ReLU, then `fc6_new`."""
    if num_classes < 1:
        raise ValueError(f"densenet121: num_classes must be at least 1, got {num_classes}")
    return _densenet121(n, bottom, num_classes, BOIT_HIDDEN)


# --- layer groups -------------------------------------------------------------------------

def _group(keras_layers) -> tuple[str, ...]:
    return tuple(name for _, caffe_layers in keras_layers
                 for name, kind in caffe_layers if kind in _PARAMETERISED)


def _layer_groups(classifiers: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """conv1, denseblock1, transition1, ..., denseblock4, final_bn, classifier."""
    last = FIRST_STAGE + len(BLOCKS) - 1
    groups = [("conv1", _group(KERAS_LAYERS[:4]))]
    for block, layers in enumerate(BLOCKS, 1):
        stage = FIRST_STAGE + block - 1
        groups.append((f"denseblock{block}", _group(_stage_names(stage, layers))))
        if stage < last:
            groups.append((f"transition{block}", _group(_transition_names(stage))))
    groups.append(("final_bn", _group(KERAS_LAYERS[_KERAS_INDEX["bn"]:])))
    groups.append(("classifier", classifiers))
    return tuple(groups)


_SOURCE = (f"Boit & Zeng 2019 (DenseNet-121 pretrained on ImageNet; Methodology); "
           f"definition: {PORT}; Keras names: keras.applications.DenseNet121")
_NOTES = (
    f"names, order, BatchNorm eps {BN_EPS} and pool1 rounding follow {PORT}; Keras uses eps "
    "1.001e-5",
    "the port's fc6 (1x1 convolution, 1000 outputs) is replaced by fc6_new; assumed: an "
    "InnerProduct (same function on the 1x1 pool5 blob, N x C output like the other models)",
    "BatchNorm: 3 blobs (mean, variance, moving-average factor), param lr_mult 0 decay_mult 0; "
    "in TRAIN a BatchNorm of the frozen part uses its stored statistics (use_global_stats "
    "true, set by the policy: medtl.finetune.FROZEN_STATISTICS), a learning one its batch's "
    "(and updates the stored ones); in TEST every one uses the stored statistics",
    "assumed: conv fillers msra FAN_OUT (Huang et al.'s Torch init; the port has no fillers), "
    "Scale gamma 1 / beta 0 (Caffe's defaults, as Torch), new dense layers xavier AVERAGE + "
    "zero bias (Keras Dense defaults: Boit used Keras)",
    "assumed: 224 crop of 256 stored images, the port's ImageNet protocol (Boit gives no size); "
    f"the port's weights expect BGR mean {MEAN_BGR} and scale {INPUT_SCALE} (MEAN_BGR, "
    "INPUT_SCALE)",
    "no dropout: the port and Keras DenseNet-121 have none",
    f"Boit's fine-tuning boundary: Keras {BOIT_UNFREEZE_FROM} = Caffe {BOIT_FIRST_LEARNING} "
    "(BOIT_FIRST_LEARNING; keras_to_caffe / caffe_layers_from map the other names)",
    "a randomly initialised net has BatchNorm statistics of zero: its TEST-phase outputs (and "
    "in TRAIN those of its frozen BatchNorms) are meaningless until it is trained or weights "
    "are copied",
)

DENSENET121 = ModelSpec(
    name="densenet121",
    body=densenet121,
    crop_size=224,
    image_size=256,
    zoo_model=None,   # not a BVLC model-zoo net: weights from the port (PORT)
    classifiers=(CLASSIFIER,),
    layer_groups=_layer_groups((CLASSIFIER,)),
    source=_SOURCE,
    notes=_NOTES,
)

DENSENET121_BOIT = ModelSpec(
    name="densenet121-boit",
    body=densenet121_boit_head,
    crop_size=224,
    image_size=256,
    zoo_model=None,
    classifiers=(HIDDEN, CLASSIFIER),
    layer_groups=_layer_groups((HIDDEN, CLASSIFIER)),
    source=_SOURCE + "; head: Boit & Zeng 2019 Methodology, Strategy 1 and Training (dense "
                     "classifier, ReLU, sigmoid, binary cross-entropy)",
    notes=(*_NOTES,
           f"assumed: hidden width {BOIT_HIDDEN} (the poster gives none): the dense classifier "
           "of the Keras feature-extraction recipe (Chollet, Deep Learning with Python 5.3) "
           "whose steps the poster follows",
           "assumed: the hidden layer sits on the global average pool (Strategy 1 removes only "
           "the last layer, the softmax classifier, so the pooled 1024 features remain); no "
           "dropout (the poster names none)",
           "binary task: num_classes = 1 with the sigmoid loss variant (binary cross-entropy)"),
)
