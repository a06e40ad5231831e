"""What a study's report gets and gives back.

`medtl.experiments.report.build` reads the finished runs once (verified, see `runs`), hands
them to the study's adapter as a :class:`ReportContext`, and composes REPORT.md from the
:class:`ReportBody` it returns: the study's result sections and figures, then the sections
every report has (where each number comes from, deviations, assumptions).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.experiments.report.published import Table
from medtl.experiments.spec import Experiment


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class FinishedRun:
    """A finished, verified run: its settings (`run.json`) and numbers (`metrics.json`)."""

    run_id: str
    config_id: str
    label: str
    fold: int
    fraction: float
    seed: int
    run_dir: Path
    record: dict[str, Any]
    metrics: dict[str, Any]

    def rows(self, name: str = "predictions.csv") -> list[dict[str, str]]:
        """A CSV the run wrote (predictions.csv by default)."""
        return read_csv(self.run_dir / name)

    def trace(self) -> list[dict[str, str]]:
        """The training trace (empty for a run that trained nothing)."""
        path = self.run_dir / "trace.csv"
        return read_csv(path) if path.is_file() else []


@dataclass(frozen=True)
class ReportContext:
    """A study's finished runs, the published tables that apply, and where figures go."""

    experiment: Experiment
    runs: list[FinishedRun]
    failed: list[tuple[str, str]]          # (run id, reason) of failed runs
    fig_dir: Path
    tables: list[Table]
    labels: dict[str, str]                 # configuration id -> the paper's label

    def by_configuration(self) -> dict[str, list[FinishedRun]]:
        """Configuration id -> its runs, in the spec's order."""
        out: dict[str, list[FinishedRun]] = defaultdict(list)
        for run in self.runs:
            out[run.config_id].append(run)
        return dict(out)

    def first_per_configuration(self) -> list[FinishedRun]:
        return [runs[0] for runs in self.by_configuration().values()]

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


@dataclass
class ReportBody:
    """A study's part of the report."""

    lines: list[str]                                   # the result sections (Markdown)
    summary: dict[str, Any]                            # report.json
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # where its numbers come from
    deviations: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
