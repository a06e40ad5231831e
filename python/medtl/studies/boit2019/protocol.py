"""Boit & Zeng 2019: DenseNet-121 transfer learning on ChestX-ray14 (a poster).

Strategy 1, feature extraction: the ImageNet base frozen (its BatchNorm statistics included,
medtl.finetune.FROZEN_STATISTICS), a new dense classifier (ReLU hidden layer, sigmoid output,
binary cross-entropy) trained, on un-augmented images ("Feature extraction without Data
Augmentation"). Strategy 2, fine-tuning: unfrozen from Keras layer conv5_block16_2_conv
upward, on Keras-augmented images ("Fine-tuning with Data Augmentation"). Each strategy runs
under each optimiser the poster names (Adam, SGD, RMSprop); the poster gives none of their
settings, nor rates, batch or epochs: those are assumed, after the Keras release and recipe
it follows. Caffe's SGD, Adam and RMSProp solvers make Keras's updates (tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass

from medtl.errors import ConfigError
from medtl.finetune import Policy
from medtl.nets.densenet import BOIT_FIRST_LEARNING, BOIT_UNFREEZE_FROM, INPUT_SCALE, MEAN_BGR
from medtl.nets.variants import StoredInput
from medtl.protocols import Configuration, register_protocol
from medtl.provenance import Sourced, assumed, paper
from medtl.solver import SolverRecipe

PAPER = "boit2019"
METHODS = "Boit & Zeng 2019 Methodology"
RESULTS = "Boit & Zeng 2019 Results"
MODEL = "densenet121-boit"
NAMED = (f"{METHODS}: 'We trained the model using several Optimizers e.g. Adam, SGD, "
         "RMSprop'")
KERAS = "Keras applies one rate to every trainable weight"
# Keras 2.2.4 (October 2018) was the Keras of the poster's spring 2019; `epsilon=None` there
# means K.epsilon() = 1e-7 (Keras 2.0 releases used 1e-8).
KERAS_DEFAULT = "not given; Keras 2.2 keras/optimizers.py default"
BY_NAME = ("the poster names the optimiser without settings, as compile(optimizer='<name>') "
           "does")
SLOW = ("fine-tuning needs a slow rate so the unfrozen pretrained layers are not wrecked: the "
        "fine-tuning rate of the Keras recipe the poster follows")
BOOK = "Chollet, Deep Learning with Python Sec. 5.3.2, fine-tuning: RMSprop(lr=1e-5)"
BLOG = ("Chollet, 'Building powerful image classification models using very little data', "
        "Keras blog 2016, fine-tuning: SGD(lr=1e-4, momentum=0.9)")
INIT = paper("pretrained", f"{METHODS}: DenseNet-121 pretrained on ImageNet")
SAME_RATE = assumed(1.0, f"not given; {KERAS}")
NO_DECAY = assumed((0.0, 0.0), "not given; Keras layers have no weight decay by default")
WITHOUT_AUGMENTATION = paper(False, f"{RESULTS}: 'Feature extraction without Data "
                                    "Augmentation'")
WITH_AUGMENTATION = paper(True, f"{RESULTS}: 'Fine-tuning with Data Augmentation'; "
                                f"{METHODS}: 'Keras ImageDataGenerator ... real-time data "
                                "augmentation'")


@dataclass(frozen=True)
class Optimiser:
    """One optimiser the poster names, as a Caffe solver type with Keras's settings."""

    key: str                      # "" for Adam (the policies fe / ft), else "sgd", "rmsprop"
    label: str
    type: str                     # Caffe's solver type
    fe: tuple[Sourced, Sourced]   # (rate, momentum) under feature extraction
    ft: tuple[Sourced, Sourced]   # (rate, momentum) under fine-tuning
    momentum2: Sourced | None = None
    delta: Sourced | None = None
    rms_decay: Sourced | None = None


def _epsilon(name: str) -> Sourced:
    return assumed(1e-7, f"{KERAS_DEFAULT}: {name}(epsilon=None) -> K.epsilon() = 1e-7 "
                         "(older Keras 2.0: 1e-8)")


ADAM_BETA1 = assumed(0.9, f"{KERAS_DEFAULT}: Adam(beta_1=0.9)")
OPTIMISERS = (
    Optimiser("", "Adam", "Adam",
              fe=(assumed(0.001, f"{KERAS_DEFAULT}: Adam(lr=0.001); {BY_NAME}"), ADAM_BETA1),
              ft=(assumed(1e-5, f"not given; {SLOW} ({BOOK})"), ADAM_BETA1),
              momentum2=assumed(0.999, f"{KERAS_DEFAULT}: Adam(beta_2=0.999)"),
              delta=_epsilon("Adam")),
    Optimiser("sgd", "SGD", "SGD",
              fe=(assumed(0.01, f"{KERAS_DEFAULT}: SGD(lr=0.01); {BY_NAME}"),
                  assumed(0.0, f"{KERAS_DEFAULT}: SGD(momentum=0.)")),
              ft=(assumed(1e-4, f"not given; {SLOW} ({BLOG})"),
                  assumed(0.9, f"not given; {BLOG}"))),
    Optimiser("rmsprop", "RMSprop", "RMSProp",
              fe=(assumed(0.001, f"{KERAS_DEFAULT}: RMSprop(lr=0.001); {BY_NAME}"),
                  assumed(0.0, "Keras RMSprop has no momentum (Caffe's RMSProp requires 0)")),
              ft=(assumed(1e-5, f"not given; {SLOW} ({BOOK})"),
                  assumed(0.0, "Keras RMSprop has no momentum (Caffe's RMSProp requires 0)")),
              delta=_epsilon("RMSprop"),
              rms_decay=assumed(0.9, f"{KERAS_DEFAULT}: RMSprop(rho=0.9) (Caffe's own default "
                                     "rms_decay is 0.99)")),
)


def _policies(opt: Optimiser) -> tuple[Policy, Policy]:
    suffix = f"-{opt.key}" if opt.key else ""
    fe = Policy(
        name=f"fe{suffix}", paper=PAPER, init=INIT, bias_ratio=SAME_RATE, decay_mults=NO_DECAY,
        description=f"strategy 1: frozen DenseNet-121 base, new dense classifier trained "
                    f"({opt.label})",
        base_lr=opt.fe[0],
        first_learning=paper("classifiers", f"{METHODS}: feature extraction, convolutional "
                                            "base frozen, new densely connected classifier"),
        tuned_mult=paper(0.0, f"{METHODS}: the base is frozen"),
        classifier_mult=SAME_RATE,
        notes=(f"training data: un-augmented images (the dataset's `train` set) <- "
               f"{WITHOUT_AUGMENTATION.describe()}",),
    )
    ft = Policy(
        name=f"ft{suffix}", paper=PAPER, init=INIT, bias_ratio=SAME_RATE, decay_mults=NO_DECAY,
        description=f"strategy 2: unfrozen from Keras {BOIT_UNFREEZE_FROM} "
                    f"(Caffe {BOIT_FIRST_LEARNING}) upward ({opt.label})",
        base_lr=opt.ft[0],
        first_learning=paper(BOIT_FIRST_LEARNING, f"Boit & Zeng 2019 Discussion: unfroze from "
                                                  f"'{BOIT_UNFREEZE_FROM}' (Keras name)"),
        tuned_mult=SAME_RATE,
        classifier_mult=SAME_RATE,
        notes=(f"training data: Keras ImageDataGenerator-augmented copies (the dataset's "
               f"`train_augmented` set) <- {WITH_AUGMENTATION.describe()}",),
    )
    return fe, ft


def _solver(policy: Policy, opt: Optimiser, momentum: Sourced) -> SolverRecipe:
    return SolverRecipe(
        name=f"boit2019-{policy.name}",
        type=paper(opt.type, NAMED),
        base_lr=policy.base_lr,
        lr_policy=assumed("fixed", "not given; Keras optimisers keep a fixed rate by default"),
        gamma=assumed(1.0, "unused with a fixed rate"),
        step_epochs=assumed(1, "unused with a fixed rate"),
        momentum=momentum,
        momentum2=opt.momentum2,
        delta=opt.delta,
        rms_decay=opt.rms_decay,
        weight_decay=assumed(0.0, "not given; Keras applies no weight decay by default"),
        batch_size=assumed(32, "not given; Keras' default batch size"),
        max_epochs=assumed(10, "not given"),
        val_batch_size=assumed(32, "not given; same as training"),
    )


CLASSES = paper(1, f"{METHODS}: one sigmoid output with binary cross-entropy")
TRAIN = assumed(77_872, "nominal: the official train_val_list.txt (86,524 images) less a "
                        "10% patient-level validation split (the poster gives no split)")
VAL = assumed(8_652, "nominal: 10% of train_val_list.txt, split by patient")

# The dataset stores 8-bit gray in B, G and R at 224 (medtl.studies.boit2019.dataset); the Data
# layer applies the port's input normalisation (a run takes its dataset manifest's values).
STORED_INPUT = StoredInput(
    mean_value=assumed(MEAN_BGR, "the BGR mean the DenseNet-Caffe port's ImageNet weights "
                                 "expect (its README; the poster gives no normalisation)"),
    scale=assumed(INPUT_SCALE, "the DenseNet-Caffe port's scale in place of the std (its "
                               "README)"))

_AUGMENTATION: dict[str, Sourced] = {}


def _configurations() -> list[Configuration]:
    out = []
    for opt in OPTIMISERS:
        fe, ft = _policies(opt)
        for policy, strategy, momentum, augmented in (
                (fe, "feature extraction", opt.fe[1], WITHOUT_AUGMENTATION),
                (ft, "fine-tuning", opt.ft[1], WITH_AUGMENTATION)):
            _AUGMENTATION[policy.name] = augmented
            out.append(Configuration(PAPER, "chestxray14_binary", MODEL, policy,
                                     _solver(policy, opt, momentum), CLASSES, TRAIN, VAL,
                                     loss="sigmoid",
                                     label=f"DenseNet-121 {strategy}, {opt.label}",
                                     stored_input=STORED_INPUT))
    return out


def augmentation(cfg: Configuration) -> Sourced:
    """Whether `cfg` trains on augmented copies (True) or plain images, with the source."""
    try:
        return _AUGMENTATION[cfg.policy.name]
    except KeyError:
        raise ConfigError(f"{cfg.id}: policy {cfg.policy.name!r} is not one of Boit 2019's "
                          f"({', '.join(_AUGMENTATION)})") from None


CONFIGURATIONS = register_protocol(PAPER, _configurations())
