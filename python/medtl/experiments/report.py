"""`medtl report SPEC`: our numbers beside the published ones, with figures.

Writes `results/<paper>/<study>/REPORT.md`, `report.json` and `figures/*.png` from the
finished runs: the predictions of every fold are pooled per configuration (cross-validation as
the papers report it), ensembles average their members' probabilities, and every value is
traced to its run directory. The report lists every assumption and every deviation from the
paper. Detection studies get the FROC report (`report_froc`), classification studies the
accuracy / F1 / confusion report (`report_classification`), chosen by the dataset adapter.
"""

from __future__ import annotations

from pathlib import Path

from medtl.experiments.datasets import adapter_for
from medtl.experiments.report_common import finished_runs
from medtl.experiments.report_other import OTHER_REPORTS
from medtl.experiments.spec import load_experiment
from medtl.studies.shin2016.ild.report import build_classification_report
from medtl.studies.shin2016.ln.report import build_froc_report
from medtl.studies.tajbakhsh2016.report import build_tajbakhsh_report

BUILDERS = {"froc": build_froc_report, "classification": build_classification_report,
            "tajbakhsh": lambda experiment, _adapter: build_tajbakhsh_report(experiment.path),
            **OTHER_REPORTS}


def build_report(spec_path: Path) -> Path:
    """Write REPORT.md and its figures; returns the report's path."""
    experiment = load_experiment(spec_path)
    adapter = adapter_for(experiment)
    if not finished_runs(experiment):
        raise FileNotFoundError(f"{spec_path}: no finished runs yet; run `medtl run {spec_path}`")
    return BUILDERS[getattr(adapter, "report_kind", "froc")](experiment, adapter)
