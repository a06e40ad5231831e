"""VGG-16 (configuration D of Simonyan & Zisserman 2015), named as VGG_ILSVRC_16_layers.

Layer names and order follow the authors' released Caffe definition
`VGG_ILSVRC_16_layers_deploy.prototxt` (conv1_1, relu1_1, conv1_2, relu1_2, pool1, ...,
conv5_3, relu5_3, pool5, fc6, relu6, drop6, fc7, relu7, drop7, fc8), so `copy_from` of
`VGG_ILSVRC_16_layers.caffemodel` transfers every layer but the renamed classifier `fc8_new`.
That definition is a deploy file without fillers; the fillers here are the paper's.

Parameters (weights + biases), counted by Caffe from the generated nets:

| model | classes | parameters  |
|-------|---------|-------------|
| vgg16 | 2       | 134,268,738 |
| vgg16 | 1000    | 138,357,544 |

At 1000 classes this is VGG-16's published 138M (Simonyan & Zisserman 2015, Table 2).
"""

from __future__ import annotations

from medtl.caffe_env import caffe
from medtl.nets.body import Head
from medtl.nets.layers import constant, conv_relu, fc, fc_relu, gaussian, learned_param, max_pool
from medtl.nets.registry import ModelSpec

CLASSIFIER = "fc8_new"
LOSS = "loss"
DROPOUT_RATIO = 0.5   # Simonyan & Zisserman 2015 Sec. 3.1: dropout 0.5 on the first two FC
# Simonyan & Zisserman 2015 Sec. 3.1 footnote: random init without pre-training works with
# Glorot & Bengio's procedure; Caffe's xavier with AVERAGE is that variance, 2/(fan_in+fan_out).
GLOROT = dict(type="xavier", variance_norm=2)   # FillerParameter.AVERAGE
# Configuration D, Table 1: (block, convolutions, filters); 3x3 pad 1, then max pool 2x2 / 2.
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def vgg16(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """Add VGG-16 on `bottom` (224x224) to NetSpec `n`; `deploy` changes nothing."""
    L = caffe().layers
    p = learned_param()
    b = constant(0)   # Sec. 3.1: "the biases were initialised with zero"
    top = bottom
    for block, convs, filters in BLOCKS:
        for i in range(1, convs + 1):
            name = f"conv{block}_{i}"
            n[name], n[f"relu{block}_{i}"] = conv_relu(top, filters, 3, pad=1, param=p,
                                                       weight_filler=GLOROT, bias_filler=b)
            top = n[name]
        n[f"pool{block}"] = max_pool(top, 2, 2)
        top = n[f"pool{block}"]
    n.fc6, n.relu6 = fc_relu(top, 4096, param=p, weight_filler=GLOROT, bias_filler=b)
    n.drop6 = L.Dropout(n.fc6, dropout_ratio=DROPOUT_RATIO, in_place=True)
    n.fc7, n.relu7 = fc_relu(n.fc6, 4096, param=p, weight_filler=GLOROT, bias_filler=b)
    n.drop7 = L.Dropout(n.fc7, dropout_ratio=DROPOUT_RATIO, in_place=True)
    # The new classifier as in Caffe's fine-tuning example (fc8_flickr: gaussian 0.01, bias 0).
    n[CLASSIFIER] = fc(n.fc7, num_classes, param=p, weight_filler=gaussian(0.01),
                       bias_filler=b)
    return [Head(n[CLASSIFIER], LOSS)]


VGG16 = ModelSpec(
    name="vgg16",
    body=vgg16,
    crop_size=224,    # Simonyan & Zisserman 2015 Sec. 2.1: 224x224 input
    image_size=256,   # Shin 2016: images resampled to 256x256
    zoo_model="VGG_ILSVRC_16_layers",
    classifiers=(CLASSIFIER,),
    layer_groups=(
        *((f"conv{block}", tuple(f"conv{block}_{i}" for i in range(1, convs + 1)))
          for block, convs, _ in BLOCKS),
        ("fc6", ("fc6",)), ("fc7", ("fc7",)), ("fc8", (CLASSIFIER,)),
    ),
    source="Shin 2016 Sec. IV-C (VGG-16-TL, the 16-layer VGGNet); Simonyan & Zisserman 2015 "
           "Table 1 configuration D; names: VGG_ILSVRC_16_layers_deploy.prototxt (authors' "
           "Caffe release)",
    notes=(
        "assumed: fillers. The released VGG_ILSVRC_16_layers definition has none; the paper's "
        "N(0, 1e-2) needed pre-training from net A, and its footnote says Glorot & Bengio "
        "init trains from scratch, so conv1_1..fc7 use Caffe xavier (variance_norm AVERAGE) "
        "and biases 0",
        "fc8 renamed fc8_new (num_output = num_classes; gaussian 0.01, bias 0 as Caffe's "
        "fc8_flickr) so copy_from leaves it fresh",
        "assumed: 256 stored / 224 crop (Shin resamples to 256x256; VGG's fixed 224 input)",
        "no sha1 is published for VGG_ILSVRC_16_layers.caffemodel",
    ),
)
