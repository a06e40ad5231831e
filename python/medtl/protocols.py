"""The configurations the papers report, and where each paper declares them.

A paper's protocol (`medtl.studies.<paper>.protocol`) declares its fine-tuning policies,
solvers and the configurations (model x policy per study) it reports, every value with its
provenance, and registers them here; :func:`configurations` is how the rest of the kit (the
generator, the inspector, the specs) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medtl.finetune import GAUSSIAN_STD, Policy
from medtl.nets.registry import get_model
from medtl.nets.variants import StoredInput, input_transform
from medtl.provenance import Sourced
from medtl.registry import Registry
from medtl.solver import SolverRecipe


@dataclass(frozen=True)
class Configuration:
    """One trained network of one study: what `prototxt/` and `solvers/` hold a copy of."""

    paper: str
    study: str
    model: str                       # medtl.nets.registry name
    policy: Policy
    solver: SolverRecipe
    num_classes: Sourced
    train_size: Sourced              # nominal size the canonical solver is computed for
    val_size: Sourced
    loss: Literal["softmax", "sigmoid"] = "softmax"
    label: str = ""                  # the paper's name for it, e.g. "AlexNet-TL-H"
    # 8-bit records at the input size with a fixed transform in the Data layer (LMDB); None:
    # softmax reads LMDB with the model's input_transform, sigmoid HDF5 stored preprocessed
    stored_input: StoredInput | None = None

    @property
    def id(self) -> str:
        return f"{self.model}_{self.policy.name}"

    def provenance(self) -> dict[str, Sourced]:
        """Every value of this configuration with its source or its "assumed" reason."""
        p = self.policy
        out = {"num_classes": self.num_classes, "train_size": self.train_size,
               "val_size": self.val_size, "policy.init": p.init, "policy.base_lr": p.base_lr,
               "policy.first_learning": p.first_learning, "policy.tuned_mult": p.tuned_mult,
               "policy.classifier_mult": p.classifier_mult, "policy.bias_ratio": p.bias_ratio,
               "policy.decay_mults": p.decay_mults}
        if p.init.value == "gaussian":
            out["policy.gaussian_std"] = GAUSSIAN_STD
        if self.loss == "softmax" or self.stored_input is not None:   # LMDB: transform_param
            out.update({f"transform.{k}": v for k, v in
                        input_transform(get_model(self.model), self.stored_input).items()})
        out.update({f"solver.{k}": v for k, v in self.solver.values().items()})
        return out

    def assumptions(self) -> dict[str, str]:
        """The values the paper leaves open, with the kit's reasons."""
        return {k: v.assumed for k, v in self.provenance().items() if v.is_assumed}


PROTOCOLS: Registry[list[Configuration]] = Registry("paper")


def register_protocol(paper: str, configs: list[Configuration]) -> list[Configuration]:
    """Called once by each paper's protocol module."""
    return PROTOCOLS.register(paper, configs)


SELECTIONS: Registry[dict[str, Sourced]] = Registry("paper")


def register_selection(paper: str, per_study: dict[str, Sourced]) -> dict[str, Sourced]:
    """Called by a paper's protocol module: study -> the snapshot its runs keep
    (`min_val_loss` or `max_val_auc`), with its source or the reason it is assumed."""
    return SELECTIONS.register(paper, per_study)


def selection_rule(paper: str, study: str) -> Sourced | None:
    """The snapshot rule a paper's protocol declares for a study (None: it declares none)."""
    if paper not in list(SELECTIONS):
        return None
    return SELECTIONS.get(paper).get(study)


def configurations(paper: str | None = None) -> list[Configuration]:
    """Every configuration the papers report (one paper's, when given)."""
    if paper is None:
        return [c for _, configs in PROTOCOLS.items() for c in configs]
    return list(PROTOCOLS.get(paper))
