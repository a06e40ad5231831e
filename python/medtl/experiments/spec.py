"""Experiment specs: each study declared once, expanded into runs with stable ids.

A spec (YAML under `experiments/<paper>/`) names the paper's study, the dataset and how to
build it, which of the protocol's configurations to train, and the folds, data fractions and
seeds to cross them with. Unknown keys and wrong types are rejected with the key named. Any
setting that departs from the paper (fewer epochs, a smaller dataset) is listed by
`deviations()` so every report shows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from medtl.config import ConfigError, from_mapping, option
from medtl.protocols import Configuration, configurations

REPO = Path(__file__).resolve().parents[3]
# A run is finished once its metrics are written; a finished run is never run again.
FINISHED = "metrics.json"


def results_root() -> Path:
    """results/ of the repository, or MEDTL_RESULTS (tests, other disks)."""
    return Path(os.environ.get("MEDTL_RESULTS", REPO / "results"))


@dataclass(frozen=True)
class DatasetSpec:
    builder: str = option("", "dataset builder: shin_ln, shin_ild, ravishankar_kidney, "
                              "chestxray14, tajbakhsh_* (see medtl.experiments.datasets)")
    source: str = option("synthetic", "'synthetic' (the kit's phantoms) or the dataset root "
                                      "in its published format (relative: to the repository)")
    options: dict = option({}, "options of the builder's configuration (strict, documented)")
    phantom: dict = option({}, "options of the synthetic phantoms, with source: synthetic")


@dataclass(frozen=True)
class TrainingSpec:
    max_epochs: int | None = option(None, "override the paper's epoch count (a deviation)")
    batch_size: int | None = option(None, "override the paper's batch size (a deviation)")
    base_lr: float | None = option(None, "override the policy's base learning rate "
                                          "(a deviation)")
    selection: str = option("paper", "snapshot selection: paper (Shin: lowest validation "
                                     "loss; Tajbakhsh: highest validation AUC), min_val_loss, "
                                     "max_val_auc",
                            choices=("paper", "min_val_loss", "max_val_auc"))
    gpu: int | None = option(None, "GPU id, or none for the CPU")


@dataclass(frozen=True)
class PretrainSpec:
    """Where transfer-learning runs take their source weights from, per model."""

    weights: dict = option({}, "model -> model-zoo name (bvlc_alexnet, ...), a caffemodel "
                               "path, or 'synthetic-source' (the kit pre-trains one)")
    search_dirs: list[str] = option(["models"], "folders searched for model-zoo caffemodels "
                                                "(relative: to the repository)")
    source_task: dict = option({}, "settings of the synthetic source task (images, epochs, "
                                   "batch_size, base_lr, seed), for 'synthetic-source'")


@dataclass(frozen=True)
class ExperimentSpec:
    paper: str = option("", "paper id: shin2016, tajbakhsh2016, ravishankar2016, boit2019")
    study: str = option("", "the study within the paper, e.g. ln_mediastinum")
    title: str = option("", "one line for the report")
    dataset: dict = option({}, "the dataset (see DatasetSpec)")
    configurations: list = option(["all"], "configuration ids of the protocol (model_policy), "
                                           "'all', or {model, policy} for a combination the "
                                           "paper did not run (a deviation)")
    folds: list[int] = option([1], "folds to run (1-based)")
    data_fractions: list[float] = option([1.0], "fractions of the training groups kept")
    seeds: list[int] = option([1], "seeds (Caffe and every sampler)")
    training: dict = option({}, "training overrides (see TrainingSpec)")
    pretrained: dict = option({}, "source weights for transfer learning (see PretrainSpec)")
    ensembles: dict = option({}, "name -> list of configuration ids whose probabilities are "
                                 "averaged (Shin's Combined)")
    published: str | None = option(None, "published-numbers file, relative to the spec")
    parallel: int = option(1, "runs trained at the same time")


@dataclass(frozen=True)
class Experiment:
    """A loaded spec with its parts resolved."""

    path: Path
    spec: ExperimentSpec
    dataset: DatasetSpec
    training: TrainingSpec
    pretrained: PretrainSpec
    configurations: tuple[Configuration, ...]

    @property
    def results_dir(self) -> Path:
        """results/<paper>/<spec name>/: one folder per declared study."""
        return results_root() / self.spec.paper / self.path.stem

    def deviations(self) -> list[str]:
        """Settings that differ from the paper's protocol, for every report."""
        out = []
        t = self.training
        if t.max_epochs is not None:
            out.append(f"training.max_epochs = {t.max_epochs} (the paper's: "
                       + ", ".join(sorted({f"{c.solver.max_epochs.value}"
                                           for c in self.configurations})) + ")")
        if t.batch_size is not None:
            out.append(f"training.batch_size = {t.batch_size} (the paper's: "
                       + ", ".join(sorted({f"{c.solver.batch_size.value}"
                                           for c in self.configurations})) + ")")
        if t.base_lr is not None:
            out.append(f"training.base_lr = {t.base_lr} (the paper's: "
                       + ", ".join(sorted({f"{c.policy.base_lr.value}"
                                           for c in self.configurations})) + ")")
        if self.dataset.source == "synthetic":
            out.append("data: the kit's synthetic phantoms in the published format, not the "
                       "paper's patients")
        for cfg in self.configurations:
            if cfg.label.endswith("(not in the paper)"):
                out.append(f"{cfg.label}: a model/policy combination the paper did not run")
        for model, source in self.pretrained.weights.items():
            if source == "synthetic-source":
                out.append(f"{model}: source weights pre-trained by the kit on a synthetic "
                           "task, not ImageNet")
        return out


def _sub(cls, mapping: Any, where: str):
    return from_mapping(cls, mapping or {}, where=where)


def load_experiment(path: Path) -> Experiment:
    """Read and validate a spec; every error names the file and the key."""
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from exc
    spec = _sub(ExperimentSpec, raw, str(path))
    dataset = _sub(DatasetSpec, spec.dataset, f"{path}: dataset")
    training = _sub(TrainingSpec, spec.training, f"{path}: training")
    pretrained = _sub(PretrainSpec, spec.pretrained, f"{path}: pretrained")
    if not spec.paper or not spec.study:
        raise ConfigError(f"{path}: paper and study are required")
    try:
        available = [c for c in configurations(spec.paper) if c.study == spec.study]
    except KeyError as exc:
        raise ConfigError(f"{path}: paper: {exc.args[0]}") from None
    if not available:
        studies = sorted({c.study for c in configurations(spec.paper)})
        raise ConfigError(f"{path}: study: {spec.paper} has no study {spec.study!r} "
                          f"(studies: {', '.join(studies)})")
    by_id = {c.id: c for c in available}
    wanted = []
    for entry in (list(by_id) if spec.configurations == ["all"] else spec.configurations):
        if isinstance(entry, dict):
            extra = _extra_configuration(entry, available, path)
            by_id[extra.id] = extra
            entry = extra.id
        elif entry not in by_id:
            raise ConfigError(f"{path}: configurations: {entry!r} is not a configuration of "
                              f"{spec.paper}/{spec.study} (known: {', '.join(by_id)})")
        wanted.append(entry)
    for name, members in spec.ensembles.items():
        missing = [m for m in members if m not in wanted]
        if missing:
            raise ConfigError(f"{path}: ensembles: {name}: {missing[0]!r} is not among the "
                              "spec's configurations")
    for fraction in spec.data_fractions:
        if not 0 < fraction <= 1:
            raise ConfigError(f"{path}: data_fractions: {fraction} is not in (0, 1]")
    if any(f < 1 for f in spec.folds):
        raise ConfigError(f"{path}: folds: folds are numbered from 1")
    if spec.parallel < 1:
        raise ConfigError(f"{path}: parallel: must be at least 1")
    return Experiment(path, spec, dataset, training, pretrained,
                      tuple(by_id[w] for w in wanted))


def _extra_configuration(entry: dict, available: list[Configuration], path: Path
                         ) -> Configuration:
    """A model trained under one of the study's policies, which the paper did not report."""
    from medtl.nets.registry import UnknownModelError, get_model

    if set(entry) != {"model", "policy"}:
        raise ConfigError(f"{path}: configurations: {entry!r}: give exactly model and policy")
    try:
        get_model(entry["model"])
    except UnknownModelError as exc:
        raise ConfigError(f"{path}: configurations: {exc}") from None
    base = next((c for c in available if c.policy.name == entry["policy"]), None)
    if base is None:
        policies = sorted({c.policy.name for c in available})
        raise ConfigError(f"{path}: configurations: policy {entry['policy']!r} is not one of "
                          f"the study's ({', '.join(policies)})")
    label = f"{entry['model']} {entry['policy'].upper()} (not in the paper)"
    return replace(base, model=entry["model"], label=label)


@dataclass(frozen=True)
class RunPlan:
    """One run: a configuration on one fold, data fraction and seed."""

    experiment: Experiment
    config: Configuration
    fold: int
    fraction: float
    seed: int

    @property
    def run_id(self) -> str:
        return (f"{self.config.id}__fold{self.fold}__frac{self.fraction:g}"
                f"__seed{self.seed}")

    @property
    def run_dir(self) -> Path:
        return self.experiment.results_dir / "runs" / self.run_id


def expand(experiment: Experiment) -> list[RunPlan]:
    """Every run of the experiment, in a stable order (configuration, fold, fraction, seed)."""
    s = experiment.spec
    return [RunPlan(experiment, cfg, fold, fraction, seed)
            for cfg in experiment.configurations
            for fold in s.folds
            for fraction in s.data_fractions
            for seed in s.seeds]
