"""The spec reference, `experiments/README.md`, generated from the schema classes.

Every key a spec may hold — the top level, `dataset`, `training`, `pretrained`, each dataset
builder's options, scoring options and phantom settings, and the published-numbers file —
with its type, default, allowed values and meaning, and for protocol values where the
default comes from (the paper's table or section, or "assumed" with the reason). `medtl
generate` rewrites it; a test fails when it drifts from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtl import io
from medtl.config import fields_of
from medtl.experiments.report.published import FileSpec, TableSpec
from medtl.experiments.spec import (
    DatasetSpec,
    ExperimentSpec,
    PretrainSpec,
    SourceTask,
    TrainingSpec,
    WeightsFile,
)
from medtl.experiments.study import BUILDERS
from medtl.paths import REPO
from medtl.provenance import Sourced

REFERENCE = REPO / "experiments" / "README.md"
INTRO = """\
# Experiment specs

Each study is declared once in `experiments/<paper>/<study>.yaml` beside the paper's
published numbers (`experiments/<paper>/published.yaml`). `medtl run SPEC --list` validates
the whole spec — every key below, the builder's options, the phantom settings, the weights,
the published file, the folds against the dataset — and lists the runs with their state,
before anything is built. An unknown key, a key given twice, a wrong type or a value out of
range is an error naming the file and the key. Relative paths in a spec are taken from the
spec's own folder.

This file is generated from the code by `medtl generate` (do not edit it by hand; a test
fails when it drifts). Defaults marked *paper* are the paper's value with where it stands;
*assumed* ones are the kit's choice where the paper is silent, with the reason.
"""
KEYS = ((ExperimentSpec, "", "Top level"),
        (DatasetSpec, "dataset.", "`dataset`: the data and how to build it"),
        (TrainingSpec, "training.", "`training`: overrides of the paper's training (each is "
                                    "a deviation the reports list)"),
        (PretrainSpec, "pretrained.", "`pretrained`: source weights for transfer learning"),
        (WeightsFile, "pretrained.weights.<model>.", "`pretrained.weights.<model>` given as a "
                                                    "mapping: your own source weights"),
        (SourceTask, "pretrained.source_task.", "`pretrained.source_task`: the synthetic "
                                                "source task of 'synthetic-source' weights"))


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _allowed(f: dict[str, Any]) -> str:
    parts = []
    if f["choices"]:
        parts.append(", ".join(f"`{c}`" for c in f["choices"]))
    low, high = f["minimum"], f["maximum"]
    if low is not None and high is not None:
        parts.append(f"{'(' if f['exclusive_minimum'] else '['}{low:g}, {high:g}]")
    elif low is not None:
        parts.append(f"{'>' if f['exclusive_minimum'] else '>='} {low:g}")
    elif high is not None:
        parts.append(f"<= {high:g}")
    if f["non_empty"]:
        parts.append("not empty")
    return "; ".join(parts)


def _meaning(f: dict[str, Any]) -> str:
    prov: Sourced | None = f["prov"]
    text = f["doc"].replace("|", "\\|")
    if prov is not None:
        origin = f"*assumed*: {prov.assumed}" if prov.is_assumed else f"*paper*: {prov.source}"
        text += f" ({origin.replace('|', '/')})"
    return text


def table(cls: type, prefix: str) -> list[str]:
    """A Markdown table of one schema class's keys under `prefix`."""
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for f in fields_of(cls):
        default = "(section)" if f["section"] else _value(f["default"])
        lines.append(f"| `{prefix}{f['name']}` | {f['type']} | {default} | {_allowed(f)} | "
                     f"{_meaning(f)} |")
    return lines


def _builder_sections() -> list[str]:
    lines = ["", "## Dataset builders", "",
             "`dataset.builder` names one of these; each has its own `dataset.options` (and "
             "scoring options under one key of them) and `dataset.phantom` settings, used with "
             "`source: synthetic`.", ""]
    for name, cls in BUILDERS.items():
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        lines += [f"### `{name}` ({cls.paper}: {', '.join(cls.studies)})", "", doc, "",
                  f"`dataset.source`: {cls.source_help}.", "",
                  f"`dataset.options` ({cls.options_class.__name__}, "
                  f"`{cls.options_class.__module__}`):", "",
                  *table(cls.options_class, "")]
        if cls.scoring_class is not None:
            lines += ["", f"`dataset.options.{cls.scoring_key}` "
                      f"({cls.scoring_class.__name__}):", "",
                      *table(cls.scoring_class, f"{cls.scoring_key}.")]
        if cls.phantom_class is not None:
            lines += ["", f"`dataset.phantom` ({cls.phantom_class.__name__}):", "",
                      *table(cls.phantom_class, "")]
        lines.append("")
    return lines


def spec_reference() -> str:
    """The whole reference as Markdown."""
    lines = [INTRO.rstrip(), "", "## Keys", ""]
    for cls, prefix, title in KEYS:
        lines += [f"### {title}", "", *table(cls, prefix), ""]
    lines += _builder_sections()
    lines += ["## The published-numbers file", "",
              "`published:` names a YAML file (relative to the spec) of the paper's numbers, "
              "checked when the spec is loaded:", "", *table(FileSpec, ""), "",
              "Each table:", "", *table(TableSpec, "tables.<name>."), ""]
    return "\n".join(_squeeze(lines)).rstrip() + "\n"


def _squeeze(lines: list[str]) -> list[str]:
    """No two blank lines in a row."""
    out: list[str] = []
    for line in lines:
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return out


def write_reference(path: Path = REFERENCE) -> bool:
    """Rewrite the reference if it changed; returns whether it did."""
    text = spec_reference()
    if path.is_file() and path.read_text() == text:
        return False
    io.write_text(path, text)
    return True


def reference_drift(path: Path = REFERENCE) -> bool:
    return not path.is_file() or path.read_text() != spec_reference()
