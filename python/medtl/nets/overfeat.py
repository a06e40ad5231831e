"""OverFeat "fast" (Sermanet et al. 2014, Table 1), as Shin et al. 2016 Sec. IV-C uses it.

Shin describes OverFeat as "similar to AlexNet" with 1024 filters in conv4 and conv5 and
pooling kernel 2 in pool2 and pool5 (the "e.g." examples of its differences). The layers
below are Sermanet's fast model, which agrees with both examples:

| layer | Sermanet Table 1 (fast)                          | output at 231x231 |
|-------|--------------------------------------------------|-------------------|
| conv1 | 96 filters 11x11, stride 4; max pool 2x2 / 2     | 96x56x56 -> 28x28 |
| conv2 | 256 filters 5x5, stride 1; max pool 2x2 / 2      | 256x24x24 -> 12x12 |
| conv3 | 512 filters 3x3, pad 1                           | 512x12x12 |
| conv4 | 1024 filters 3x3, pad 1                          | 1024x12x12 |
| conv5 | 1024 filters 3x3, pad 1; max pool 2x2 / 2        | 1024x12x12 -> 6x6 |
| fc6   | 3072                                             | 3072 |
| fc7   | 4096                                             | 4096 |
| fc8   | classes (renamed fc8_new)                        | C |

Names follow the AlexNet convention (conv1 ... pool5, fc6, relu6, drop6, ...) so the kit's
layer-wise fine-tuning levels apply unchanged. No Caffe weights of OverFeat were ever
published (only the original Torch/C++ release), so there is no zoo model to copy from.

Parameters (weights + biases), counted by Caffe from the generated nets:

| model    | classes | parameters  |
|----------|---------|-------------|
| overfeat | 2       | 141,832,066 |
| overfeat | 1000    | 145,920,872 |

Sermanet et al. 2014 Table 4 gives 145M for the fast model (1000 classes).
"""

from __future__ import annotations

from medtl.caffe_env import caffe
from medtl.nets.body import Head
from medtl.nets.layers import constant, conv_relu, fc, fc_relu, gaussian, learned_param, max_pool
from medtl.nets.registry import ModelSpec

CLASSIFIER = "fc8_new"
LOSS = "loss"
DROPOUT_RATIO = 0.5   # Sermanet 2014 Sec. 3.1: dropout 0.5 in layers 6 and 7
INIT_STD = 0.01       # Sermanet 2014 Sec. 3.1: weights initialised with (mu, sigma) = (0, 1e-2)


def overfeat_fast(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """Add OverFeat-fast on `bottom` (231x231) to NetSpec `n`; `deploy` changes nothing."""
    L = caffe().layers
    p = learned_param()
    w, b = gaussian(INIT_STD), constant(0)   # bias 0: assumed (see OVERFEAT_FAST.notes)

    n.conv1, n.relu1 = conv_relu(bottom, 96, 11, stride=4, param=p, weight_filler=w,
                                 bias_filler=b)
    n.pool1 = max_pool(n.conv1, 2, 2)
    n.conv2, n.relu2 = conv_relu(n.pool1, 256, 5, param=p, weight_filler=w, bias_filler=b)
    n.pool2 = max_pool(n.conv2, 2, 2)
    n.conv3, n.relu3 = conv_relu(n.pool2, 512, 3, pad=1, param=p, weight_filler=w,
                                 bias_filler=b)
    n.conv4, n.relu4 = conv_relu(n.conv3, 1024, 3, pad=1, param=p, weight_filler=w,
                                 bias_filler=b)
    n.conv5, n.relu5 = conv_relu(n.conv4, 1024, 3, pad=1, param=p, weight_filler=w,
                                 bias_filler=b)
    n.pool5 = max_pool(n.conv5, 2, 2)
    n.fc6, n.relu6 = fc_relu(n.pool5, 3072, param=p, weight_filler=w, bias_filler=b)
    n.drop6 = L.Dropout(n.fc6, dropout_ratio=DROPOUT_RATIO, in_place=True)
    n.fc7, n.relu7 = fc_relu(n.fc6, 4096, param=p, weight_filler=w, bias_filler=b)
    n.drop7 = L.Dropout(n.fc7, dropout_ratio=DROPOUT_RATIO, in_place=True)
    n[CLASSIFIER] = fc(n.fc7, num_classes, param=p, weight_filler=w, bias_filler=b)
    return [Head(n[CLASSIFIER], LOSS)]


OVERFEAT_FAST = ModelSpec(
    name="overfeat",
    body=overfeat_fast,
    crop_size=231,    # Sermanet 2014 Table 1: fast model input 231x231
    image_size=256,   # Sermanet 2014 Sec. 3.1: smallest side 256; Shin: images at 256x256
    zoo_model=None,
    classifiers=(CLASSIFIER,),
    layer_groups=(*((f"conv{i}", (f"conv{i}",)) for i in range(1, 6)),
                  ("fc6", ("fc6",)), ("fc7", ("fc7",)), ("fc8", (CLASSIFIER,))),
    source="Shin 2016 Sec. IV-C (OverFeat-TL; conv4/conv5 1024 filters, pool2/pool5 kernel "
           "2); layers: Sermanet et al. 2014 (OverFeat) Table 1 fast model",
    notes=(
        "no public Caffe weights of OverFeat exist (only the original Torch release): "
        "zoo_model is None; Shin's OverFeat-TL weights cannot be reproduced from a zoo model",
        "assumed: Sermanet's fast model exactly (conv3 512 filters, pool1 kernel 2, conv2 "
        "unpadded, fc6 3072); Shin lists only conv4/conv5 and pool2/pool5 as examples",
        "assumed: no LRN and no filter groups (Sermanet uses no contrast normalisation and a "
        "single-column model)",
        "assumed: crop 231 (Table 1 input size), although Sermanet Sec. 3.1 trains on 221 "
        "crops; 231 gives Table 1's 6x6 pool5 exactly",
        "assumed: biases initialised to 0 (Sermanet states only the weights' (0, 1e-2))",
        f"fc8 renamed {CLASSIFIER} (num_output = num_classes), as for the BVLC models",
        "names follow AlexNet (conv1..conv5, pool1/2/5, fc6-fc7 with relu/drop): Sermanet "
        "numbers layers 1-8 without names",
    ),
)
