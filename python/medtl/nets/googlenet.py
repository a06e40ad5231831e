"""GoogLeNet-H and GoogLeNet-L (Shin 2016), named exactly as Caffe's BVLC GoogLeNet.

GoogLeNet-H is `models/bvlc_googlenet/train_val.prototxt` layer for layer: the same names,
order, hyper-parameters, fillers and `param` entries, so `copy_from` of
`bvlc_googlenet.caffemodel` transfers every layer by name. The only change is the three
classifiers: `loss{1,2,3}/classifier` become `loss{1,2,3}/classifier_new` with
`num_output = num_classes`, so `copy_from` leaves them freshly initialised. The two auxiliary
classifiers (after inception_4a and inception_4d) exist only in train/val nets, weighted 0.3
as in BVLC; deploy nets end at `loss3/classifier_new`, as BVLC's deploy.prototxt does.

GoogLeNet-L (Shin 2016 Sec. IV-A, 64x64 input) changes only the stem: conv1 has 32 filters
of 5x5, pad 2, stride 1 (BVLC: 64 of 7x7, pad 3, stride 2) and the pooling after it has
stride 1 (BVLC: 2). Those two layers are named for what they are (`conv1/5x5_s1`,
`pool1/3x3_s1`); everything else keeps BVLC's names. Blob sizes (Caffe rounds pooling up):

| blob               | GoogLeNet-H (224) | GoogLeNet-L (64) |
|--------------------|-------------------|------------------|
| conv1              | 64 x 112 x 112    | 32 x 64 x 64     |
| pool1              | 64 x 56 x 56      | 32 x 62 x 62     |
| pool2/3x3_s2       | 192 x 28 x 28     | 192 x 31 x 31    |
| pool3/3x3_s2       | 480 x 14 x 14     | 480 x 15 x 15    |
| loss1, loss2 pool  | 512, 528 x 4 x 4  | 512, 528 x 5 x 5 |
| pool4/3x3_s2       | 832 x 7 x 7       | 832 x 7 x 7      |
| pool5/7x7_s1       | 1024 x 1 x 1      | 1024 x 1 x 1     |

So every BVLC layer stays valid at 64x64 and nothing else had to change; the auxiliary
classifiers' `loss1/fc` and `loss2/fc` see 128 x 5 x 5 = 3200 inputs instead of 2048.

Parameters (weights + biases), counted by Caffe from the generated nets ("train" includes
both auxiliary classifiers, "deploy" is the main path only):

| model       | classes | deploy     | train      |
|-------------|---------|------------|------------|
| googlenet-h | 2       | 5,975,602  | 10,309,430 |
| googlenet-h | 1000    | 6,998,552  | 13,378,280 |
| googlenet-l | 2       | 5,966,514  | 12,659,638 |
| googlenet-l | 1000    | 6,989,464  | 15,728,488 |

At 1000 classes GoogLeNet-H equals BVLC GoogLeNet (deploy 6,998,552; train_val 13,378,280).
"""

from __future__ import annotations

from dataclasses import dataclass

from medtl.caffe_env import caffe
from medtl.nets.body import Head
from medtl.nets.layers import constant, learned_param
from medtl.nets.registry import ModelSpec

# Everything below is bvlc_googlenet/train_val.prototxt unless a comment says otherwise.
XAVIER = dict(type="xavier")
BIAS = constant(0.2)             # every conv and loss{1,2}/fc
CLASSIFIER_BIAS = constant(0)    # loss{1,2,3}/classifier
LRN = dict(local_size=5, alpha=1e-4, beta=0.75)
AUX_DROPOUT = 0.7                # loss{1,2}/drop_fc
MAIN_DROPOUT = 0.4               # pool5/drop_7x7_s1
AUX_LOSS_WEIGHT = 0.3            # loss{1,2}/loss

CLASSIFIERS = ("loss1/classifier_new", "loss2/classifier_new", "loss3/classifier_new")
MAIN_CLASSIFIER = CLASSIFIERS[2]
# Loss layers and their tops as bvlc_googlenet/train_val.prototxt of Caffe 1.0 names them
# (BVLC/caffe#5176, 2017, renamed loss2's top from loss2/loss1 to loss2/loss2).
LOSS_LAYERS = ("loss1/loss", "loss2/loss", "loss3/loss3")
LOSS_TOPS = ("loss1/loss1", "loss2/loss2", "loss3/loss3")

# Inception modules (Szegedy 2015 Table 1): #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj. None marks BVLC's 3x3/2 max pools between the stages.
INCEPTIONS: tuple[tuple[str, tuple[int, int, int, int, int, int]] | None, ...] = (
    ("3a", (64, 96, 128, 16, 32, 32)),
    ("3b", (128, 128, 192, 32, 96, 64)),
    None,
    ("4a", (192, 96, 208, 16, 48, 64)),
    ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)),
    None,
    ("5a", (256, 160, 320, 32, 128, 128)),
    ("5b", (384, 192, 384, 48, 128, 128)),
)
# Auxiliary classifiers branch off after these modules.
AUX_AFTER = {"4a": "loss1", "4d": "loss2"}
STAGE_POOLS = ("pool3/3x3_s2", "pool4/3x3_s2")


@dataclass(frozen=True)
class _Stem:
    """conv1 and the pooling after it: the only layers GoogLeNet-L changes."""

    conv: str
    relu: str
    pool: str
    filters: int
    kernel: int
    pad: int
    stride: int
    pool_stride: int


# bvlc_googlenet: 64 filters 7x7, pad 3, stride 2; pool1 3x3 stride 2.
STEM_H = _Stem("conv1/7x7_s2", "conv1/relu_7x7", "pool1/3x3_s2", 64, 7, 3, 2, 2)
# Shin 2016 Sec. IV-A: filters 64 -> 32, pad 3 -> 2, kernel 7 -> 5, stride 2 -> 1, and the
# subsequent pooling stride 2 -> 1. Names follow the new shapes (assumed, see GOOGLENET_L).
STEM_L = _Stem("conv1/5x5_s1", "conv1/relu_5x5", "pool1/3x3_s1", 32, 5, 2, 1, 1)


def _conv(bottom, nout: int, ks: int, *, pad: int = 0, stride: int = 1):
    """A BVLC GoogLeNet convolution; default-valued fields are left out, as in BVLC's file."""
    extra = {}
    if pad:
        extra["pad"] = pad
    if stride != 1:
        extra["stride"] = stride
    return caffe().layers.Convolution(bottom, param=learned_param(), num_output=nout,
                                      kernel_size=ks, weight_filler=XAVIER, bias_filler=BIAS,
                                      **extra)


def _conv_relu(n, bottom, name: str, relu: str, nout: int, ks: int, *, pad: int = 0,
               stride: int = 1):
    n[name] = _conv(bottom, nout, ks, pad=pad, stride=stride)
    n[relu] = caffe().layers.ReLU(n[name], in_place=True)
    return n[name]


def _fc(bottom, nout: int, bias: dict):
    return caffe().layers.InnerProduct(bottom, param=learned_param(), num_output=nout,
                                       weight_filler=XAVIER, bias_filler=bias)


def _pool(bottom, method: str, ks: int, stride: int, pad: int = 0):
    c = caffe()
    extra = dict(pad=pad) if pad else {}
    return c.layers.Pooling(bottom, pool=getattr(c.params.Pooling, method), kernel_size=ks,
                            stride=stride, **extra)


def _inception(n, bottom, module: str, widths: tuple[int, ...]):
    b1, r3, b3, r5, b5, proj = widths
    p = f"inception_{module}/"
    branch1 = _conv_relu(n, bottom, p + "1x1", p + "relu_1x1", b1, 1)
    reduce3 = _conv_relu(n, bottom, p + "3x3_reduce", p + "relu_3x3_reduce", r3, 1)
    branch3 = _conv_relu(n, reduce3, p + "3x3", p + "relu_3x3", b3, 3, pad=1)
    reduce5 = _conv_relu(n, bottom, p + "5x5_reduce", p + "relu_5x5_reduce", r5, 1)
    branch5 = _conv_relu(n, reduce5, p + "5x5", p + "relu_5x5", b5, 5, pad=2)
    n[p + "pool"] = _pool(bottom, "MAX", 3, 1, pad=1)
    branch_pool = _conv_relu(n, n[p + "pool"], p + "pool_proj", p + "relu_pool_proj", proj, 1)
    n[p + "output"] = caffe().layers.Concat(branch1, branch3, branch5, branch_pool)
    return n[p + "output"]


def _auxiliary(n, bottom, prefix: str, num_classes: int):
    """BVLC's auxiliary classifier: 5x5/3 average pool, 1x1 conv 128, FC 1024, dropout 0.7."""
    L = caffe().layers
    n[f"{prefix}/ave_pool"] = _pool(bottom, "AVE", 5, 3)
    conv = _conv_relu(n, n[f"{prefix}/ave_pool"], f"{prefix}/conv", f"{prefix}/relu_conv",
                      128, 1)
    n[f"{prefix}/fc"] = _fc(conv, 1024, BIAS)
    n[f"{prefix}/relu_fc"] = L.ReLU(n[f"{prefix}/fc"], in_place=True)
    n[f"{prefix}/drop_fc"] = L.Dropout(n[f"{prefix}/fc"], dropout_ratio=AUX_DROPOUT,
                                       in_place=True)
    n[f"{prefix}/classifier_new"] = _fc(n[f"{prefix}/fc"], num_classes, CLASSIFIER_BIAS)
    return n[f"{prefix}/classifier_new"]


def _googlenet(n, bottom, num_classes: int, deploy: bool, stem: _Stem) -> list[Head]:
    L = caffe().layers
    top = _conv_relu(n, bottom, stem.conv, stem.relu, stem.filters, stem.kernel,
                     pad=stem.pad, stride=stem.stride)
    n[stem.pool] = _pool(top, "MAX", 3, stem.pool_stride)
    n["pool1/norm1"] = L.LRN(n[stem.pool], **LRN)
    top = _conv_relu(n, n["pool1/norm1"], "conv2/3x3_reduce", "conv2/relu_3x3_reduce", 64, 1)
    top = _conv_relu(n, top, "conv2/3x3", "conv2/relu_3x3", 192, 3, pad=1)
    n["conv2/norm2"] = L.LRN(top, **LRN)
    n["pool2/3x3_s2"] = _pool(n["conv2/norm2"], "MAX", 3, 2)
    top = n["pool2/3x3_s2"]

    aux_tops = []
    stage_pools = iter(STAGE_POOLS)
    for entry in INCEPTIONS:
        if entry is None:
            name = next(stage_pools)
            n[name] = _pool(top, "MAX", 3, 2)
            top = n[name]
            continue
        module, widths = entry
        top = _inception(n, top, module, widths)
        if module in AUX_AFTER and not deploy:
            aux_tops.append(_auxiliary(n, top, AUX_AFTER[module], num_classes))

    n["pool5/7x7_s1"] = _pool(top, "AVE", 7, 1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=MAIN_DROPOUT,
                                       in_place=True)
    n[MAIN_CLASSIFIER] = _fc(n["pool5/7x7_s1"], num_classes, CLASSIFIER_BIAS)
    heads = [Head(n[MAIN_CLASSIFIER], LOSS_LAYERS[2], loss_top=LOSS_TOPS[2])]
    heads += [Head(t, layer, AUX_LOSS_WEIGHT, loss_top=top)
              for t, layer, top in zip(aux_tops, LOSS_LAYERS, LOSS_TOPS, strict=False)]
    return heads


def googlenet_h(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """BVLC GoogLeNet (224x224 input); auxiliary heads (weight 0.3) unless `deploy`."""
    return _googlenet(n, bottom, num_classes, deploy, STEM_H)


def googlenet_l(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """GoogLeNet-L (64x64 input): Shin 2016 Sec. IV-A's stem, the rest BVLC GoogLeNet."""
    return _googlenet(n, bottom, num_classes, deploy, STEM_L)


def _module_layers(module: str) -> tuple[str, ...]:
    p = f"inception_{module}/"
    return tuple(p + s for s in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj"))


def _layer_groups(stem: _Stem) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Trunk in forward order, then the auxiliary heads, then the main classifier."""
    return (
        ("conv1", (stem.conv,)),
        ("conv2", ("conv2/3x3_reduce", "conv2/3x3")),
        *((f"inception_{e[0]}", _module_layers(e[0])) for e in INCEPTIONS if e is not None),
        ("loss1", ("loss1/conv", "loss1/fc", "loss1/classifier_new")),
        ("loss2", ("loss2/conv", "loss2/fc", "loss2/classifier_new")),
        ("classifier", (MAIN_CLASSIFIER,)),
    )


_RENAMED = ("loss1/classifier, loss2/classifier and loss3/classifier renamed *_new "
            "(num_output = num_classes) so copy_from leaves them fresh")
_AUX = ("auxiliary heads loss1 (after inception_4a) and loss2 (after inception_4d), loss weight "
        "0.3, only in train/val nets; the loss1/loss2 layer groups are absent from deploy nets")
_LOSS_NAMES = ("loss layers and tops named as Caffe 1.0's bvlc_googlenet train_val: layers "
               "loss1/loss, loss2/loss, loss3/loss3 with tops loss1/loss1, loss2/loss2, "
               "loss3/loss3 (older Caffe named loss2's top loss2/loss1; BVLC/caffe#5176). The "
               "loss layers follow the body, where BVLC puts each after its classifier; they "
               "have no parameters and draw no random numbers, so the order changes nothing")
_AUX_ORDER = ("in the generated nets the auxiliary layers sit in forward order (loss1 after "
              "inception_4a, loss2 after inception_4d); layer_groups lists them after the trunk")

GOOGLENET_H = ModelSpec(
    name="googlenet-h",
    body=googlenet_h,
    crop_size=224,    # bvlc_googlenet transform_param crop_size; Shin 2016 Sec. III-A
    image_size=256,   # Shin 2016 Sec. III-A / IV-A: 256x256 images for the -H models
    zoo_model="bvlc_googlenet",
    classifiers=CLASSIFIERS,
    layer_groups=_layer_groups(STEM_H),
    source="Shin 2016 Sec. III-A (nine Inception layers) and Sec. IV-A (22-layer depth); "
           "the auxiliary classifiers and everything else: Caffe "
           "models/bvlc_googlenet/train_val.prototxt",
    notes=(_RENAMED, _AUX, _LOSS_NAMES, _AUX_ORDER,
           "dropout (0.4 main, 0.7 aux) kept in deploy, as in bvlc_googlenet/deploy.prototxt "
           "(identity at TEST)",
           "BVLC's per-head top-1/top-5 Accuracy layers are left to the val variant, which "
           "adds Accuracy for the main head only"),
)

GOOGLENET_L = ModelSpec(
    name="googlenet-l",
    body=googlenet_l,
    crop_size=64,     # Shin 2016 Sec. IV-A: 64x64 input
    image_size=64,
    zoo_model=None,   # Shin trains it from random init only (GoogLeNet-RI-L, Table II)
    classifiers=CLASSIFIERS,
    layer_groups=_layer_groups(STEM_L),
    source="Shin 2016 Sec. IV-A (conv1 filters 64 -> 32, pad 3 -> 2, kernel 7 -> 5, stride "
           "2 -> 1; following pooling stride 2 -> 1); rest as Caffe "
           "models/bvlc_googlenet/train_val.prototxt",
    notes=(_RENAMED, _AUX, _LOSS_NAMES, _AUX_ORDER,
           "assumed: conv1 and pool1 are renamed conv1/5x5_s1 (relu conv1/relu_5x5) and "
           "pool1/3x3_s1, since BVLC's names state the H shapes; every other name is BVLC's",
           "assumed: no crop (image_size = crop_size = 64); Shin names no crop for the 64x64 "
           "models",
           "sizes at 64x64 checked: conv1 64x64, pool1 62x62, pool2 31x31, pool3 15x15, aux "
           "5x5/3 average pools 5x5, pool4 7x7, pool5/7x7_s1 1x1; no layer had to change, "
           "loss1/fc and loss2/fc have 3200 inputs (2048 in GoogLeNet-H)",
           "no pretrained weights: bvlc_googlenet's conv2/3x3_reduce (32 vs 64 input channels), "
           "loss1/fc and loss2/fc (3200 vs 2048 inputs) do not fit; copy_from would abort on "
           "their shapes"),
)
