"""What a study's runs need from its dataset: per-fold inputs, per-sample metadata, scoring.

An adapter builds (once, cached by its options) the dataset a spec names, then gives each run
its fold's training / validation / test databases, turns the net's probabilities into
per-sample predictions, and scores them the way the paper does. The builders:

- shin_ln  (`datasets_ln`): Shin 2016 lymph-node CADe, FROC per patient.
- shin_ild (`datasets_ild`): Shin 2016 ILD slice / patch classification, six classes.
- ravishankar_kidney (`ravishankar_adapter`): CaffeNet fc7 (+ Haar) features, gradient
  boosting, localisation failures, filter changes.
- chestxray14 (`boit_adapter`): DenseNet-121, sigmoid output, accuracy and ROC.
- tajbakhsh_polyp / _pe / _frame / _imt (`tajbakhsh_adapters`): FROC, ROC operating points,
  dense boundary maps with open snakes.
"""

from __future__ import annotations

from medtl.config import ConfigError
from medtl.experiments.datasets_common import Adapter, FoldData, options_key
from medtl.experiments.report_other import OTHER_ADAPTERS
from medtl.experiments.spec import Experiment
from medtl.studies.shin2016.ild.adapter import ShinIldAdapter
from medtl.studies.shin2016.ln.adapter import HIT_RULE, ShinLnAdapter, score_candidates
from medtl.studies.tajbakhsh2016.adapters import TAJBAKHSH_ADAPTERS

ADAPTERS = {"shin_ln": ShinLnAdapter, "shin_ild": ShinIldAdapter, **OTHER_ADAPTERS,
            **TAJBAKHSH_ADAPTERS}

__all__ = ["ADAPTERS", "HIT_RULE", "Adapter", "FoldData", "ShinIldAdapter", "ShinLnAdapter",
           "adapter_for", "options_key", "score_candidates"]


def adapter_for(experiment: Experiment) -> Adapter:
    builder = experiment.dataset.builder
    if builder not in ADAPTERS:
        raise ConfigError(f"{experiment.path}: dataset.builder: unknown builder {builder!r} "
                          f"(known: {', '.join(ADAPTERS)})")
    return ADAPTERS[builder](experiment)
