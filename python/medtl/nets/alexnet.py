"""AlexNet-H, AlexNet-L and CaffeNet, named exactly as Caffe's BVLC model-zoo definitions.

Layer names, order, hyper-parameters and weight fillers follow `models/bvlc_alexnet/
train_val.prototxt` and `models/bvlc_reference_caffenet/train_val.prototxt` in Caffe's source,
so `copy_from` of the official caffemodels transfers every layer by name. The only change is
the classifier: BVLC's `fc8` becomes `fc8_new` (as Caffe's fine-tuning example renames it
`fc8_flickr`), so `copy_from` leaves it freshly initialised with `num_classes` outputs.

AlexNet puts LRN before pooling (conv -> relu -> norm -> pool); CaffeNet swaps them
(conv -> relu -> pool -> norm) and initialises its non-zero biases to 1 instead of 0.1.

Parameters (weights + biases), counted by Caffe from the generated nets:

| model     | classes | parameters |
|-----------|---------|------------|
| alexnet-h | 2       | 56,876,418 |
| alexnet-h | 1000    | 60,965,224 |
| alexnet-l | 2       | 28,450,818 |
| alexnet-l | 1000    | 32,539,624 |
| caffenet  | 2       | 56,876,418 |
| caffenet  | 1000    | 60,965,224 |

AlexNet-H and CaffeNet at 1000 classes equal BVLC AlexNet / CaffeNet (60,965,224).
"""

from __future__ import annotations

from dataclasses import dataclass

from medtl.caffe_env import caffe
from medtl.nets.body import Head
from medtl.nets.layers import constant, conv_relu, fc, fc_relu, gaussian, learned_param, max_pool
from medtl.nets.registry import ModelSpec

CLASSIFIER = "fc8_new"
LOSS = "loss"
DROPOUT_RATIO = 0.5                           # bvlc_alexnet drop6 / drop7
LRN = dict(local_size=5, alpha=1e-4, beta=0.75)  # bvlc_alexnet norm1 / norm2


@dataclass(frozen=True)
class _Layout:
    """What distinguishes the three variants; everything else is bvlc_alexnet."""

    conv1_filters: int = 96
    conv1_stride: int = 4
    norm_before_pool: bool = True   # AlexNet: norm -> pool; CaffeNet: pool -> norm
    bias: float = 0.1               # non-zero bias fillers: 0.1 (AlexNet), 1 (CaffeNet)


def _alexnet_body(n, bottom, num_classes: int, layout: _Layout) -> list[Head]:
    L = caffe().layers
    p = learned_param()
    w01, w005 = gaussian(0.01), gaussian(0.005)
    b0, b1 = constant(0), constant(layout.bias)

    n.conv1, n.relu1 = conv_relu(bottom, layout.conv1_filters, 11, stride=layout.conv1_stride,
                                 param=p, weight_filler=w01, bias_filler=b0)
    top = _norm_pool(n, n.conv1, 1, layout.norm_before_pool)
    n.conv2, n.relu2 = conv_relu(top, 256, 5, pad=2, group=2, param=p, weight_filler=w01,
                                 bias_filler=b1)
    top = _norm_pool(n, n.conv2, 2, layout.norm_before_pool)
    n.conv3, n.relu3 = conv_relu(top, 384, 3, pad=1, param=p, weight_filler=w01,
                                 bias_filler=b0)
    n.conv4, n.relu4 = conv_relu(n.conv3, 384, 3, pad=1, group=2, param=p, weight_filler=w01,
                                 bias_filler=b1)
    n.conv5, n.relu5 = conv_relu(n.conv4, 256, 3, pad=1, group=2, param=p, weight_filler=w01,
                                 bias_filler=b1)
    n.pool5 = max_pool(n.conv5, 3, 2)
    n.fc6, n.relu6 = fc_relu(n.pool5, 4096, param=p, weight_filler=w005, bias_filler=b1)
    n.drop6 = L.Dropout(n.fc6, dropout_ratio=DROPOUT_RATIO, in_place=True)
    n.fc7, n.relu7 = fc_relu(n.fc6, 4096, param=p, weight_filler=w005, bias_filler=b1)
    n.drop7 = L.Dropout(n.fc7, dropout_ratio=DROPOUT_RATIO, in_place=True)
    # bvlc_alexnet fc8's fillers, under the new name.
    n[CLASSIFIER] = fc(n.fc7, num_classes, param=p, weight_filler=w01, bias_filler=b0)
    return [Head(n[CLASSIFIER], LOSS)]


def _norm_pool(n, conv_top, index: int, norm_before_pool: bool):
    """normK + poolK after convK, in the variant's order; returns the last top."""
    L = caffe().layers
    norm, pool = f"norm{index}", f"pool{index}"
    if norm_before_pool:
        n[norm] = L.LRN(conv_top, **LRN)
        n[pool] = max_pool(n[norm], 3, 2)
        return n[pool]
    n[pool] = max_pool(conv_top, 3, 2)
    n[norm] = L.LRN(n[pool], **LRN)
    return n[norm]


def alexnet_h(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """BVLC AlexNet (227x227 input) on `bottom`; `deploy` changes nothing (no aux heads)."""
    return _alexnet_body(n, bottom, num_classes, _Layout())


def alexnet_l(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """Shin's AlexNet-L (64x64 input): conv1 has 64 filters at stride 2."""
    return _alexnet_body(n, bottom, num_classes, _Layout(conv1_filters=64, conv1_stride=2))


def caffenet(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """BVLC reference CaffeNet (227x227 input): pool before norm, non-zero biases 1."""
    return _alexnet_body(n, bottom, num_classes, _Layout(norm_before_pool=False, bias=1.0))


# Tajbakhsh 2016 Table II fine-tunes these levels, conv1 ... fc8.
LAYER_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((f"conv{i}", (f"conv{i}",)) for i in range(1, 6)),
    ("fc6", ("fc6",)),
    ("fc7", ("fc7",)),
    ("fc8", (CLASSIFIER,)),
)

_RENAMED = (f"fc8 renamed {CLASSIFIER} (num_output = num_classes) so copy_from leaves it "
            "fresh, as Caffe's fine-tuning example renames it fc8_flickr")

ALEXNET_H = ModelSpec(
    name="alexnet-h",
    body=alexnet_h,
    crop_size=227,    # Tajbakhsh 2016 Table I: 3x227x227 input
    image_size=256,   # Shin 2016 Sec. III-A / IV-A: 256x256 images for the -H models
    zoo_model="bvlc_alexnet",
    classifiers=(CLASSIFIER,),
    layer_groups=LAYER_GROUPS,
    source="Tajbakhsh 2016 Table I (shapes) and Table II (fine-tuning levels); Shin 2016 "
           "Sec. III-A (AlexNet-H); definition: Caffe models/bvlc_alexnet/train_val.prototxt",
    notes=(_RENAMED,
           "dropout 0.5 kept in deploy, as in bvlc_alexnet/deploy.prototxt (identity at TEST)"),
)

ALEXNET_L = ModelSpec(
    name="alexnet-l",
    body=alexnet_l,
    crop_size=64,     # Shin 2016 Sec. IV-A: 64x64 input
    image_size=64,
    zoo_model=None,   # Shin trains it from random init only (AlexNet-RI-L, Table II)
    classifiers=(CLASSIFIER,),
    layer_groups=LAYER_GROUPS,
    source="Shin 2016 Sec. III-A and IV-A (conv1 filters 96 -> 64, stride 4 -> 2); rest as "
           "Caffe models/bvlc_alexnet/train_val.prototxt",
    notes=(_RENAMED,
           "assumed: only conv1's filter count and stride change (the changes Sec. IV-A names); "
           "Sec. III-A's 'reduced the filter size, stride and pooling parameters' gives no "
           "other value, so conv1 keeps kernel 11 / pad 0 and every pooling stays 3/2",
           "assumed: no crop (image_size = crop_size = 64); Shin names no crop for the 64x64 "
           "models",
           "shapes at 64x64: conv1 64x27x27, pool1 13x13, pool2 6x6, pool5 256x3x3, so fc6 has "
           "2304 inputs",
           "no pretrained weights: bvlc_alexnet's conv1, conv2 (group input 32 vs 48) and fc6 "
           "(2304 vs 9216 inputs) do not fit; copy_from would abort on their shapes"),
)

CAFFENET = ModelSpec(
    name="caffenet",
    body=caffenet,
    crop_size=227,    # bvlc_reference_caffenet transform_param crop_size
    image_size=256,   # ImageNet images resized to 256x256 for the BVLC models
    zoo_model="bvlc_reference_caffenet",
    classifiers=(CLASSIFIER,),
    layer_groups=LAYER_GROUPS,
    source="Ravishankar 2016 (CaffeNet, FA/PA/NA fine-tuning); definition: Caffe "
           "models/bvlc_reference_caffenet/train_val.prototxt",
    notes=(_RENAMED,
           "differs from AlexNet-H only as BVLC's definitions do: pool before LRN, non-zero "
           "biases initialised to 1",
           "assumed: 256 stored / 227 crop, BVLC's ImageNet setting; Ravishankar gives no "
           "input size"),
)
