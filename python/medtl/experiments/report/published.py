"""The published numbers a study is compared with (`experiments/<paper>/published.yaml`),
parsed and checked once.

    paper: shin2016
    tables:
      table_ii:
        source: "Shin 2016 Table II"          # where the numbers stand (required)
        description: ...                       # what they are
        studies: [ln_mediastinum, ln_abdomen]  # the studies it applies to (default: all)
        metrics: [froc_auc, tpr_at_3fp]        # the columns (or `classes` for a matrix)
        rows:                                  # label -> values, or label -> {study: values}
          CifarNet: {ln_mediastinum: [0.91, 0.70], ln_abdomen: [0.81, 0.44]}
        notes: ["..."]
        hardware: "one NVidia K40 GPU (12 GB)"  # timing tables: what the paper measured on

Every row has one value per metric (or class): a number, a text as printed (e.g. a time)
or `null` for a value the paper does not give.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.config import ConfigError, from_mapping, load_yaml, option

Values = list[float | str | None]


@dataclass(frozen=True)
class TableSpec:
    source: str = option("", "where the numbers stand in the paper (table or section)")
    description: str = option("", "what the numbers are")
    studies: list[str] = option([], "the studies the table applies to (none: every study)")
    metrics: list[str] = option([], "column names, one value each per row")
    classes: list[str] = option([], "class names of a confusion matrix (rows and columns)")
    rows: dict[str, Values | dict[str, Values]] = option(
        {}, "row label -> values, or -> {study: values}")
    notes: list[str] = option([], "remarks on transcription and ambiguities")
    hardware: str = option("", "what the paper measured on (for timing tables)")


@dataclass(frozen=True)
class FileSpec:
    paper: str = option("", "the paper's id")
    tables: dict[str, TableSpec] = option({}, "table name -> table")


@dataclass(frozen=True)
class Table:
    name: str
    source: str
    description: str
    metrics: list[str]
    classes: list[str]
    rows: dict[str, Values]            # this study's rows
    notes: list[str] = field(default_factory=list)
    hardware: str = ""                 # what the paper measured on (timing tables)


@dataclass(frozen=True)
class Published:
    path: Path
    paper: str
    tables: dict[str, TableSpec]

    def for_study(self, study: str) -> list[Table]:
        """The tables that apply to `study`, with its rows only."""
        out = []
        for name, t in self.tables.items():
            if t.studies and study not in t.studies:
                continue
            rows = {}
            for label, values in t.rows.items():
                if isinstance(values, dict):
                    if study in values:
                        rows[label] = list(values[study])
                else:
                    rows[label] = list(values)
            out.append(Table(name, t.source, t.description, list(t.metrics), list(t.classes),
                             rows, list(t.notes), t.hardware))
        return out

    def table(self, name: str, study: str) -> Table | None:
        return next((t for t in self.for_study(study) if t.name == name), None)


def load_published(path: Path, *, where: str | None = None) -> Published:
    """Read and check a published-numbers file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where or path}: {path} does not exist")
    raw: Any = load_yaml(path)
    spec = from_mapping(FileSpec, raw, where=str(path))
    for name, table in spec.tables.items():
        if not table.source:
            raise ConfigError(f"{path}: tables.{name}.source: required")
        width = len(table.metrics) or len(table.classes)
        for label, values in table.rows.items():
            per_study = values if isinstance(values, dict) else {"": values}
            for study, row in per_study.items():
                if width and len(row) != width:
                    key = f"tables.{name}.rows.{label}" + (f".{study}" if study else "")
                    raise ConfigError(f"{path}: {key}: {len(row)} values for {width} "
                                      f"{'metrics' if table.metrics else 'classes'}")
    return Published(path, spec.paper, spec.tables)
