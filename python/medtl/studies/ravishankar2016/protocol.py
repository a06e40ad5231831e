"""Ravishankar et al. 2016: CaffeNet fc7 features for kidney detection in ultrasound.

FA (full adaptation), PA (conv1 and conv2 frozen) and NA (no adaptation) as in the paper's
Sec. 2 (via the review in shared papers); the solver is not given at all, so it follows
Caffe's own fine-tuning example (models/finetune_flickr_style), every value marked assumed.
"""

from __future__ import annotations

from medtl.finetune import Policy
from medtl.protocols import Configuration, register_protocol
from medtl.provenance import assumed, paper
from medtl.solver import SolverRecipe

PAPER = "ravishankar2016"
SEC2 = "Ravishankar 2016 Sec. 2"
MODEL = "caffenet"
_FLICKR = "not given; Caffe's fine-tuning example models/finetune_flickr_style"
INIT = paper("pretrained", f"{SEC2}: CaffeNet (bvlc_reference_caffenet) trained on ImageNet")
BASE_LR = assumed(0.001, _FLICKR)
TUNED = assumed(1.0, f"{_FLICKR}: pretrained layers at base_lr")
NEW = assumed(10.0, f"{_FLICKR}: the new classifier at 10 x base_lr")

FA = Policy(name="fa", paper=PAPER, description="full network adaptation: every layer "
            "fine-tuned", init=INIT, base_lr=BASE_LR,
            first_learning=paper("all", f"{SEC2}: CaffeNet_FA, entire network fine-tuned"),
            tuned_mult=TUNED, classifier_mult=NEW)
PA = Policy(name="pa", paper=PAPER, description="partial adaptation: conv1, conv2 frozen",
            init=INIT, base_lr=BASE_LR,
            first_learning=paper("conv3", f"{SEC2}: CaffeNet_PA keeps conv1 and conv2 "
                                          "unchanged"),
            tuned_mult=TUNED, classifier_mult=NEW)
NA = Policy(name="na", paper=PAPER, description="no adaptation: ImageNet fc7 features as is",
            init=INIT, base_lr=BASE_LR,
            first_learning=paper("none", f"{SEC2}: CaffeNet_NA keeps every weight; fc7 "
                                         "features go to a gradient boosting machine"),
            tuned_mult=paper(0.0, f"{SEC2}: no layer changed"),
            classifier_mult=paper(0.0, f"{SEC2}: no layer changed"))

SOLVER = SolverRecipe(
    name="ravishankar2016",
    type=assumed("SGD", _FLICKR),
    base_lr=BASE_LR,
    lr_policy=assumed("step", _FLICKR),
    gamma=assumed(0.1, _FLICKR),
    step_epochs=assumed(10, f"{_FLICKR} (stepsize 20,000 of 100,000 iterations: a fifth)"),
    momentum=assumed(0.9, _FLICKR),
    weight_decay=assumed(0.0005, _FLICKR),
    batch_size=assumed(50, _FLICKR),
    max_epochs=assumed(50, f"{_FLICKR}: 100,000 iterations of 50 on ~100,000 patches"),
    val_batch_size=assumed(50, _FLICKR),
)

CLASSES = paper(2, f"{SEC2}: kidney ROI vs background")
TRAIN = assumed(10_000, "nominal size for the canonical files only (the data are private); "
                        "runs recompute iterations from their training set")
VAL = assumed(2_000, "nominal: a fifth of the nominal training set")

CONFIGURATIONS = register_protocol(PAPER, [
    Configuration(PAPER, "kidney", MODEL, policy, SOLVER, CLASSES, TRAIN, VAL,
                  label=f"CaffeNet_{policy.name.upper()}")
    for policy in (FA, PA, NA)
])
