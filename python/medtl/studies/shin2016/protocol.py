"""Shin et al. 2016, IEEE TMI: CNNs for CADe, transfer learning on lymph nodes and ILD.

Policies RI / TL / ImNet (Sec. III-C), the LN solver (Sec. III-C), the ILD solver (Sec. IV-C:
the paragraph on the ILD runs of Tables VI and VII), the snapshot each study keeps, and the
configurations of Tables II, III, VI and VIII. Sec. IV-C covers the ILD runs only: a value of
the LN studies that the paper does not give in Sec. II, III-C or IV-A is assumed.
"""

from __future__ import annotations

from medtl.finetune import Policy
from medtl.protocols import Configuration, register_protocol, register_selection
from medtl.provenance import assumed, paper
from medtl.solver import SolverRecipe

PAPER = "shin2016"
S3C = "Shin 2016 Sec. III-C"
S4C = "Shin 2016 Sec. IV-C"

RI = Policy(
    name="ri", paper=PAPER, description="random initialisation, every layer learns",
    init=paper("gaussian", f"{S3C}: Gaussian random initialisation"),
    base_lr=paper(0.01, S3C),
    first_learning=paper("all", f"{S3C}: trained from scratch"),
    tuned_mult=paper(1.0, f"{S3C}: base_lr 0.01 for every layer"),
    classifier_mult=paper(1.0, f"{S3C}: base_lr 0.01 for every layer"),
)
TL = Policy(
    name="tl", paper=PAPER,
    description="ImageNet weights, every layer fine-tuned; pretrained layers 10x slower",
    init=paper("pretrained", f"{S3C}: initialised from the ImageNet model"),
    base_lr=paper(0.01, S3C),
    first_learning=paper("all", f"{S3C}: every layer fine-tuned"),
    tuned_mult=paper(0.1, f"{S3C}: pretrained layers at a 10x smaller rate (0.001)"),
    classifier_mult=paper(1.0, f"{S3C}: the new last FC layer at 0.01, random init"),
)
IMNET = Policy(
    name="imnet", paper=PAPER,
    description="off-the-shelf ImageNet features, only the new classifier learns",
    init=paper("pretrained", f"{S3C}: AlexNet pretrained on ImageNet"),
    base_lr=paper(0.01, S3C),
    first_learning=paper("classifiers", f"{S3C}: pretrained layers fixed, only the new "
                                        "last layer trained"),
    tuned_mult=paper(0.0, f"{S3C}: pretrained layers fixed"),
    classifier_mult=paper(1.0, f"{S3C}: the new last layer at base_lr 0.01"),
)

_VAL_BATCH = assumed(50, "the paper gives no validation batch size; same as training")

LN_SOLVER = SolverRecipe(
    name="shin2016-ln",
    type=paper("SGD", S3C),
    base_lr=paper(0.01, S3C),
    lr_policy=paper("step", f"{S3C}: reduced by 10x every 10 epochs"),
    gamma=paper(0.1, S3C),
    step_epochs=paper(10, S3C),
    momentum=paper(0.9, S3C),
    weight_decay=paper(0.0005, S3C),
    batch_size=paper(50, S3C),
    max_epochs=paper(30, S3C),
    val_batch_size=_VAL_BATCH,
)


def ild_solver(batch: int, batch_source: str) -> SolverRecipe:
    return SolverRecipe(
        name=f"shin2016-ild-b{batch}",
        type=paper("SGD", S4C),
        base_lr=paper(0.01, S4C),
        lr_policy=paper("step", f"{S4C}: reduced by 10x every 30 epochs"),
        gamma=paper(0.1, S4C),
        step_epochs=paper(30, S4C),
        momentum=paper(0.9, S4C),
        weight_decay=paper(0.0005, S4C),
        batch_size=paper(batch, batch_source),
        max_epochs=paper(90, f"{S4C}: 'trained for up to 90 epochs with early stopping "
                             "criteria'"),
        val_batch_size=assumed(batch, "the paper gives no validation batch size; same as "
                                      "training"),
    )


ILD_SOLVERS = {
    "default": ild_solver(128, f"{S4C}: batch 128"),
    "googlenet": ild_solver(64, f"{S4C}: batch 64 for GoogLeNet"),
    "vgg16": ild_solver(32, f"{S4C}: batch 32 for VGG-16"),
}

# Nominal training-set sizes for the canonical solvers (runs recompute from their data).
_NOMINAL = ("nominal size for the canonical files only; every run recomputes iterations from "
            "its actual training set")
LN_SIZES = {
    # 2/3 of the nodes per fold x up to 200 views, negatives re-selected to equal prior.
    "ln_mediastinum": (assumed(103_600, f"{_NOMINAL}: 2/3 x 388 nodes x 200 views x 2 "
                                        "(equal prior), Sec. II"),
                       assumed(10_360, f"{_NOMINAL}: 10% of the training views held out")),
    "ln_abdomen": (assumed(158_800, f"{_NOMINAL}: 2/3 x 595 nodes x 200 views x 2 "
                                    "(equal prior), Sec. II"),
                   assumed(15_880, f"{_NOMINAL}: 10% of the training views held out")),
}
ILD_SIZES = {
    "ild_slice": (assumed(8_688, f"{_NOMINAL}: 4/5 x 905 slices x 12 samples (CV5), Sec. II"),
                  assumed(2_172, f"{_NOMINAL}: 1/5 x 905 slices x 12 samples")),
    "ild_patch": (assumed(20_000, f"{_NOMINAL}: up to 100 patches per ROI, Sec. II"),
                  assumed(5_000, f"{_NOMINAL}: a quarter of the training patches")),
}

LN_CLASSES = paper(2, "Shin 2016 Sec. II: true vs false lymph-node candidates")
ILD_CLASSES = paper(6, "Shin 2016 Sec. II: NM, EM, GG, FB, MN, CD")

# Table II (both LN studies): label -> (model, policy).
LN_MODELS = {
    "CifarNet": ("cifarnet", RI),
    "AlexNet-ImNet": ("alexnet-h", IMNET),
    "AlexNet-RI-H": ("alexnet-h", RI),
    "AlexNet-TL-H": ("alexnet-h", TL),
    "GoogLeNet-RI-H": ("googlenet-h", RI),
    "GoogLeNet-TL-H": ("googlenet-h", TL),
    "AlexNet-RI-L": ("alexnet-l", RI),
    "GoogLeNet-RI-L": ("googlenet-l", RI),
}
# Tables III, VI, VIII (ILD): label -> (model, policy, studies).
ILD_MODELS = {
    "CifarNet": ("cifarnet", RI, ("ild_patch",)),
    "AlexNet-ImNet": ("alexnet-h", IMNET, ("ild_slice", "ild_patch")),
    "AlexNet-RI": ("alexnet-h", RI, ("ild_slice", "ild_patch")),
    "AlexNet-TL": ("alexnet-h", TL, ("ild_slice", "ild_patch")),
    "GoogLeNet-RI": ("googlenet-h", RI, ("ild_slice", "ild_patch")),
    "GoogLeNet-TL": ("googlenet-h", TL, ("ild_slice", "ild_patch")),
    "OverFeat-TL": ("overfeat", TL, ("ild_slice", "ild_patch")),
    "VGG-16-TL": ("vgg16", TL, ("ild_slice", "ild_patch")),
}


def _ild_solver(model: str) -> SolverRecipe:
    if model.startswith("googlenet"):
        return ILD_SOLVERS["googlenet"]
    return ILD_SOLVERS.get(model, ILD_SOLVERS["default"])


def _configurations() -> list[Configuration]:
    out = []
    for study, (train, val) in LN_SIZES.items():
        for label, (model, policy) in LN_MODELS.items():
            out.append(Configuration(PAPER, study, model, policy, LN_SOLVER, LN_CLASSES,
                                     train, val, label=label))
    for label, (model, policy, studies) in ILD_MODELS.items():
        for study in studies:
            train, val = ILD_SIZES[study]
            out.append(Configuration(PAPER, study, model, policy, _ild_solver(model),
                                     ILD_CLASSES, train, val, label=label))
    return out


CONFIGURATIONS = register_protocol(PAPER, _configurations())

# The snapshot each study's runs keep (`medtl.experiments.plan.selection_for`).
ILD_SELECTION = paper("min_val_loss", f"{S4C}: 'a model snapshot with low validation loss is "
                                      "taken for the final model' (the ILD runs)")
LN_SELECTION = assumed(
    "min_val_loss", "Sec. III-C trains the LN CNNs for 30 epochs ('training convergence can "
    "be observed within 30 epochs') and gives no snapshot rule; the ILD runs' rule (Sec. "
    "IV-C: the snapshot with low validation loss) is assumed, on held-out training patients")
SELECTION = register_selection(PAPER, {**{study: LN_SELECTION for study in LN_SIZES},
                                       **{study: ILD_SELECTION for study in ILD_SIZES}})
__all__ = ["CONFIGURATIONS", "IMNET", "LN_SOLVER", "RI", "SELECTION", "TL"]
