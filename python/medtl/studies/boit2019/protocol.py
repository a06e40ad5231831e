"""Boit & Zeng 2019: DenseNet-121 transfer learning on ChestX-ray14 (a poster).

Strategy 1, feature extraction: the ImageNet base frozen, a new dense classifier (ReLU hidden
layer, sigmoid output, binary cross-entropy) trained. Strategy 2, fine-tuning: unfrozen from
Keras layer conv5_block16_2_conv upward. The poster names its optimisers (Adam, SGD, RMSprop)
but gives no rates, batch or epochs: those are assumed, after the Keras recipe it follows.
"""

from __future__ import annotations

from medtl.finetune import Policy
from medtl.nets.densenet import BOIT_FIRST_LEARNING, BOIT_UNFREEZE_FROM
from medtl.protocols import Configuration, register_protocol
from medtl.provenance import assumed, paper

PAPER = "boit2019"
METHODS = "Boit & Zeng 2019 Methodology"
MODEL = "densenet121-boit"
KERAS = "Keras applies one rate to every trainable weight"
INIT = paper("pretrained", f"{METHODS}: DenseNet-121 pretrained on ImageNet")
SAME_RATE = assumed(1.0, f"not given; {KERAS}")
NO_DECAY = assumed((0.0, 0.0), "not given; Keras layers have no weight decay by default")

FEATURE_EXTRACTION = Policy(
    name="fe", paper=PAPER, init=INIT, bias_ratio=SAME_RATE, decay_mults=NO_DECAY,
    description="strategy 1: frozen DenseNet-121 base, new dense classifier trained",
    base_lr=assumed(0.001, "not given; Keras Adam's default rate"),
    first_learning=paper("classifiers", f"{METHODS}: feature extraction, convolutional base "
                                        "frozen, new densely connected classifier"),
    tuned_mult=paper(0.0, f"{METHODS}: the base is frozen"),
    classifier_mult=SAME_RATE,
)
FINE_TUNING = Policy(
    name="ft", paper=PAPER, init=INIT, bias_ratio=SAME_RATE, decay_mults=NO_DECAY,
    description=f"strategy 2: unfrozen from Keras {BOIT_UNFREEZE_FROM} "
                f"(Caffe {BOIT_FIRST_LEARNING}) upward",
    base_lr=assumed(1e-5, "not given; a small rate so the unfrozen pretrained layers are not "
                          "wrecked, as in the Keras fine-tuning recipe the poster follows"),
    first_learning=paper(BOIT_FIRST_LEARNING, f"Boit & Zeng 2019 Discussion: unfroze from "
                                              f"'{BOIT_UNFREEZE_FROM}' (Keras name)"),
    tuned_mult=SAME_RATE,
    classifier_mult=SAME_RATE,
)


def _solver(policy: Policy):
    from medtl.solver import SolverRecipe

    return SolverRecipe(
        name=f"boit2019-{policy.name}",
        type=assumed("Adam", f"{METHODS} tried Adam, SGD and RMSprop; Adam is the first named"),
        base_lr=policy.base_lr,
        lr_policy=assumed("fixed", "not given; Keras optimisers keep a fixed rate by default"),
        gamma=assumed(1.0, "unused with a fixed rate"),
        step_epochs=assumed(1, "unused with a fixed rate"),
        momentum=assumed(0.9, "Keras Adam beta_1"),
        momentum2=assumed(0.999, "Keras Adam beta_2"),
        delta=assumed(1e-7, "Keras Adam epsilon"),
        weight_decay=assumed(0.0, "not given; Keras applies no weight decay by default"),
        batch_size=assumed(32, "not given; Keras' default batch size"),
        max_epochs=assumed(10, "not given"),
        val_batch_size=assumed(32, "not given; same as training"),
    )


CLASSES = paper(1, f"{METHODS}: one sigmoid output with binary cross-entropy")
TRAIN = assumed(77_872, "nominal: the official train_val_list.txt (86,524 images) less a "
                        "10% patient-level validation split (the poster gives no split)")
VAL = assumed(8_652, "nominal: 10% of train_val_list.txt, split by patient")

CONFIGURATIONS = register_protocol(PAPER, [
    Configuration(PAPER, "chestxray14_binary", MODEL, policy, _solver(policy), CLASSES, TRAIN,
                  VAL, loss="sigmoid", label=label)
    for policy, label in ((FEATURE_EXTRACTION, "DenseNet-121 feature extraction"),
                          (FINE_TUNING, "DenseNet-121 fine-tuning"))
])
