"""CifarNet: the 32x32 baseline of Shin et al. 2016 (Roth et al. 2014).

assumed: Caffe's `examples/cifar10/cifar10_full` layout (the cuda-convnet layers-18pct
replica): 3 conv (5x5, 32/32/64), 3 pool (3/2), LRN, one FC. Shin says "about 0.15M
parameters"; this layout has about 0.08-0.09M, a mismatch the kit records.
"""

from __future__ import annotations

from medtl.caffe_env import caffe
from medtl.nets.body import Head
from medtl.nets.layers import (
    ave_pool,
    conv,
    conv_relu,
    fc,
    gaussian,
    learned_param,
    max_pool,
)
from medtl.nets.registry import ModelSpec

INPUT_SIZE = 32


def cifarnet(n, bottom, num_classes: int, *, deploy: bool = False) -> list[Head]:
    """Add CifarNet on `bottom` to NetSpec `n`."""
    c = caffe()
    L = c.layers
    learned = learned_param()
    lrn = dict(local_size=3, alpha=5e-5, beta=0.75, norm_region=c.params.LRN.WITHIN_CHANNEL)
    n.conv1 = conv(bottom, 32, 5, pad=2, param=learned, weight_filler=gaussian(1e-4))
    n.pool1 = max_pool(n.conv1, 3, 2)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.norm1 = L.LRN(n.pool1, **lrn)
    n.conv2, n.relu2 = conv_relu(n.norm1, 32, 5, pad=2, param=learned,
                                 weight_filler=gaussian(0.01))
    n.pool2 = ave_pool(n.conv2, 3, 2)
    n.norm2 = L.LRN(n.pool2, **lrn)
    n.conv3, n.relu3 = conv_relu(n.norm2, 64, 5, pad=2, param=learned,
                                 weight_filler=gaussian(0.01))
    n.pool3 = ave_pool(n.conv3, 3, 2)
    n.ip1 = fc(n.pool3, num_classes, param=learned, weight_filler=gaussian(0.01))
    return [Head(n.ip1, "loss")]


CIFARNET = ModelSpec(
    name="cifarnet",
    body=cifarnet,
    crop_size=INPUT_SIZE,
    image_size=INPUT_SIZE,
    zoo_model=None,
    # No model-zoo weights exist; naming ip1 the classifier lets a source model trained by the
    # kit transfer everything else (ip1 starts fresh, as a renamed classifier would).
    classifiers=("ip1",),
    layer_groups=(("conv1", ("conv1",)), ("conv2", ("conv2",)), ("conv3", ("conv3",)),
                  ("ip1", ("ip1",))),
    source="Shin 2016 Sec. III-A (Roth et al. 2014 baseline); layout: Caffe examples/cifar10 "
           "cifar10_full",
    notes=("assumed: Caffe's cifar10_full layout, since Shin gives only '3 conv, 3 pool, 1 FC'",
           "Shin reports about 0.15M parameters; this layout has about 0.08M (2 classes)"),
)
