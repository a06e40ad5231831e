"""Tajbakhsh et al. 2016, IEEE TMI: full training or fine-tuning, AlexNet on four applications.

Table II: momentum 0.9; a fine-tuned layer learns at 0.001, fc8 at 0.01, a frozen layer at 0;
"AlexNet scratch" at 0.001 everywhere; gamma 0.95 once per epoch (eq. 2); bias lr 2x weights.
"""

from __future__ import annotations

from medtl.finetune import Policy
from medtl.protocols import Configuration, register_protocol, register_selection
from medtl.provenance import assumed, derived, paper
from medtl.solver import SolverRecipe

PAPER = "tajbakhsh2016"
T2 = "Tajbakhsh 2016 Table II"
BIAS = paper(2.0, f"{T2}: bias lr always twice the weights' lr")
MODEL = "alexnet-h"

LEVELS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def fine_tuned(first: str) -> Policy:
    """'Fine-tuned AlexNet: <first>-fc8': layers before `first` frozen (Table II)."""
    return Policy(
        name=f"{first}-fc8", paper=PAPER,
        description=f"ImageNet AlexNet; {first} to fc8 fine-tuned, earlier layers frozen",
        init=paper("pretrained", "Tajbakhsh 2016 Sec. VI: bvlc_alexnet, 360,000 iterations"),
        base_lr=paper(0.001, f"{T2}: a fine-tuned layer learns at 0.001"),
        first_learning=paper(first, f"{T2}: layers before {first} at 0 (frozen)"),
        tuned_mult=paper(1.0, f"{T2}: 0.001 = 1 x base_lr"),
        classifier_mult=paper(10.0, f"{T2}: fc8 at 0.01 = 10 x base_lr"),
        bias_ratio=BIAS,
    )


ONLY_FC8 = Policy(
    name="fc8", paper=PAPER, description="ImageNet AlexNet; only the new fc8 learns",
    init=paper("pretrained", "Tajbakhsh 2016 Sec. VI: bvlc_alexnet, 360,000 iterations"),
    base_lr=paper(0.001, T2),
    first_learning=paper("classifiers", f"{T2}: 'only fc8': every other layer at 0"),
    tuned_mult=paper(0.0, f"{T2}: frozen layers at 0"),
    classifier_mult=paper(10.0, f"{T2}: fc8 at 0.01 = 10 x base_lr"),
    bias_ratio=BIAS,
)


def scratch(init: str) -> Policy:
    source = ("Tajbakhsh 2016 Sec. VI: fully trained CNNs initialised from Gaussians"
              if init == "gaussian" else
              f"Tajbakhsh 2016 Fig. 10: {init.upper() if init == 'msra' else 'Xavier'} "
              "initialisation compared for convergence speed")
    return Policy(
        name="scratch" if init == "gaussian" else f"scratch-{init}", paper=PAPER,
        description=f"AlexNet trained from scratch, {init} initialisation",
        init=paper(init, source),
        base_lr=paper(0.001, f"{T2}: 'AlexNet scratch' 0.001 in every layer"),
        first_learning=paper("all", f"{T2}: every layer learns"),
        tuned_mult=paper(1.0, f"{T2}: 0.001 in every layer"),
        classifier_mult=paper(1.0, f"{T2}: fc8 at 0.001 too when training from scratch"),
        bias_ratio=BIAS,
    )


POLICIES = ([ONLY_FC8] + [fine_tuned(first) for first in reversed(LEVELS)]
            + [scratch("gaussian"), scratch("xavier"), scratch("msra")])

_EPOCHS = assumed(30, "Table II gives no epoch count; the snapshot with the highest "
                      "validation AUC is kept, so training long enough to pass the peak "
                      "(2-3 h per net on a GTX 980 Ti, Sec. VI) is what matters")
SOLVER = SolverRecipe(
    name="tajbakhsh2016",
    type=paper("SGD", "Tajbakhsh 2016 eq. (2)"),
    base_lr=paper(0.001, T2),
    lr_policy=paper("step", "Tajbakhsh 2016 eq. (2): gamma^floor(tN/|X|), once per epoch"),
    gamma=paper(0.95, T2),
    step_epochs=paper(1, "Tajbakhsh 2016 eq. (2): the rate falls at the end of each epoch"),
    momentum=paper(0.9, T2),
    weight_decay=assumed(0.0005, "not given; the bvlc_alexnet value"),
    batch_size=assumed(128, "not given; a batch that fits the paper's 6 GB GTX 980 Ti"),
    max_epochs=_EPOCHS,
    val_batch_size=assumed(128, "not given; same as training"),
)

_SPLIT = "Tajbakhsh 2016 Sec. VI: 80% training, 20% validation of the training data"


def _sizes(total: int, source: str) -> tuple:
    train = round(total * 0.8)
    return (derived(train, f"80% of {total:,} training patches ({source}); {_SPLIT}"),
            derived(total - train, f"20% of {total:,} ({source}); {_SPLIT}"))


# application -> (classes, total training samples, their source)
APPLICATIONS = {
    "polyp": (paper(2, "Tajbakhsh 2016 Sec. VI-A: polyp vs non-polyp"),
              *_sizes(100_000, "Sec. VI-A, stratified training patches")),
    "pe": (paper(2, "Tajbakhsh 2016 Sec. VI-B: PE vs non-PE"),
           *_sizes(81_000, "Sec. VI-B, stratified training patches")),
    "frame": (paper(2, "Tajbakhsh 2016 Sec. VI-C: informative vs non-informative"),
              *_sizes(40_000, "Sec. VI-C, about 40,000 sub-images")),
    "imt": (paper(3, "Tajbakhsh 2016 Sec. VI-D: lumen-intima, media-adventitia, background"),
            *_sizes(200_000, "Sec. VI-D, stratified training patches")),
}

CONFIGURATIONS = register_protocol(PAPER, [
    Configuration(PAPER, app, MODEL, policy, SOLVER, classes, train, val,
                  label="AlexNet scratch" if policy.name.startswith("scratch")
                  else f"Fine-tuned AlexNet:{policy.name}")
    for app, (classes, train, val) in APPLICATIONS.items()
    for policy in POLICIES
])
SELECTION = register_selection(PAPER, {
    app: paper("max_val_auc", "Tajbakhsh 2016 Sec. VI: training stopped at the highest "
                              "validation AUC (80/20)")
    for app in APPLICATIONS
})
